"""Service sub-commands: `serve` (service/serve.py) and the operator tooling's registrations."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the OData service")
    serve.add_argument("--host", help="interface to bind (default from [server] host, 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default $PORT, then [server] port, 8000)")
    serve.add_argument(
        "--workers", type=int, help="worker processes (default: one per CPU core, at most 8)"
    )
    serve.add_argument(
        "--cache-mb",
        type=int,
        help="response cache per worker in MB (default from [server] cache_mb, 64)",
    )
    serve.add_argument("--no-cache", action="store_true", help="turn the response cache off")
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve without authentication when ODATA_CREDENTIALS is not set (local trials only)",
    )
    serve.set_defaults(handler=serve_command)
    _register_operator_commands(commands)


def _register_operator_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """`demo`, `check`, `status` and `migrate`: the first-run and operator tooling."""
    from service import check, config_store, demo, status

    config_store.register(commands)
    demo.register(commands)
    check.register(commands)
    status.register(commands)


def serve_command(args: argparse.Namespace) -> int:
    from service.serve import serve

    return serve(
        args.config,
        host=args.host,
        port=args.port,
        workers=args.workers,
        cache_mb=args.cache_mb,
        no_cache=args.no_cache,
        allow_anonymous=args.allow_anonymous,
    )
