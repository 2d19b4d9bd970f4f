"""The `r2sf` command line: one sub-command per operator task.

Each part of the product registers its own sub-commands here (`serve` from service/, `sync`,
`scheduler` and `discover` from sync/). A command returns its exit code; errors the user can
fix are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from service.config import ConfigError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r2sf", description="Redshift summaries to Salesforce")
    parser.add_argument("--config", help="path to r2sf.toml (default: $R2SF_CONFIG or ./r2sf.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(commands)
    return parser


Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Registrar]:
    from service import commands as service_commands

    found: list[Registrar] = [service_commands.register]
    try:
        from sync import commands as sync_commands
    except ImportError:
        pass
    else:
        found.append(sync_commands.register)
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        code = handler(args)
    except ConfigError as exc:
        print(f"r2sf: configuration error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
