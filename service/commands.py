"""Service sub-commands: `serve` runs the OData service under uvicorn."""

from __future__ import annotations

import argparse
import logging
import os

from service.config import ConfigError, load_settings, redact_url

log = logging.getLogger("r2sf.service")


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
    from service import check, demo, status

    demo.register(commands)
    check.register(commands)
    status.register(commands)


def configure_logging() -> None:
    from service import logs

    logs.configure()  # JSON lines unless on a terminal (LOG_FORMAT=json|text to choose)


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import App

    configure_logging()
    settings = load_settings(args.config)
    if not settings.credentials and not args.allow_anonymous:
        App(settings)  # raises the ConfigError that explains the fix
    server = settings.file.server
    host = args.host or server.host
    port = args.port or settings.port
    workers = args.workers or server.workers or min(os.cpu_count() or 1, 8)
    if workers < 1:
        raise ConfigError("--workers", f"{workers} is not a worker count", "use 1 or more")
    # Workers are separate processes: they rebuild the settings from this environment.
    if settings.config_path is not None:
        os.environ["R2SF_CONFIG"] = str(settings.config_path.resolve())
    os.environ["R2SF_ALLOW_ANONYMOUS"] = "1" if args.allow_anonymous else "0"
    if args.no_cache or args.cache_mb is not None:
        os.environ["R2SF_CACHE_MB"] = "0" if args.no_cache else str(max(args.cache_mb, 0))
    log.info(
        "serving %s%s on %s:%d with %d worker(s), database %s",
        "anonymously " if not settings.credentials else "",
        settings.odata.path,
        host,
        port,
        workers,
        redact_url(settings.database_url),
    )
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # X-Forwarded-* are read by the app itself for nextLinks
        log_level="warning",
        timeout_graceful_shutdown=25,  # Heroku sends SIGKILL 30 s after SIGTERM
        # Longer than clients' idle reuse: a connection closed just as a client reuses it would
        # fail that request (seen once in the soak with uvicorn's 5 s default).
        timeout_keep_alive=75,
    )
    return 0
