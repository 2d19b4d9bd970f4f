"""Service sub-commands: `serve` (and later `check`, `status`, `demo`)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the OData service")
    serve.add_argument("--config", dest="config_override", help=argparse.SUPPRESS)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--allow-anonymous", action="store_true")
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    raise NotImplementedError("serve is being built")
