"""The `r2sf` command line: one sub-command per operator task.

Each part of the product registers its own sub-commands here (`serve` from service/, `sync`,
`scheduler` and `discover` from sync/). A command returns its exit code; errors the user can
fix are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from service.config import ConfigError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r2sf", description="Redshift summaries to Salesforce")
    add_global_options(parser, default=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(commands)
    # Global options also go after the command (`r2sf serve --config r2sf.toml`), for every
    # command however it was registered. There they default to nothing, so a value given before
    # the command survives, and one given after it wins.
    for command in commands.choices.values():
        add_global_options(command, default=argparse.SUPPRESS)
    return parser


def add_global_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    """The options every command reads, accepted before and after the command name."""
    parser.add_argument(
        "--config",
        default=default,
        help="path to r2sf.toml (default: $R2SF_CONFIG or ./r2sf.toml)",
    )


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
        sys.stdout.flush()  # here, where a closed pipe can still be answered quietly
    except ConfigError as exc:
        print(f"r2sf: configuration error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # `r2sf check | head`: the reader left; say nothing more (Python's own advice).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    sys.exit(code)
