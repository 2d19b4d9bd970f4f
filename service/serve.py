"""`r2sf serve`: run the OData service under uvicorn, one process per worker.

A plain function, so the CLI and `r2sf demo` start the service the same way without the demo
going back through the argument parser. It reads the settings, sets the environment the workers
rebuild them from, and hands over to uvicorn; the app itself is service/app.py.
"""

from __future__ import annotations

import logging
import os

from service.config import ConfigError, load_settings, redact_url

log = logging.getLogger("r2sf.service")


def configure_logging() -> None:
    from service import logs

    logs.configure()  # JSON lines unless on a terminal (LOG_FORMAT=json|text to choose)


def serve(
    config: str | None,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    cache_mb: int | None = None,
    no_cache: bool = False,
    allow_anonymous: bool = False,
) -> int:
    """Run the service under uvicorn until it is stopped; None means "from the settings"."""
    import uvicorn

    from service.app import App

    configure_logging()
    settings = load_settings(config)
    if not settings.credentials and not allow_anonymous:
        App(settings)  # raises the ConfigError that explains the fix
    server = settings.file.server
    host = host or server.host
    port = port or settings.port
    workers = workers or server.workers or min(os.cpu_count() or 1, 8)
    if workers < 1:
        raise ConfigError("--workers", f"{workers} is not a worker count", "use 1 or more")
    # Workers are separate processes: they rebuild the settings from this environment.
    if settings.config_path is not None:
        os.environ["R2SF_CONFIG"] = str(settings.config_path.resolve())
    os.environ["R2SF_ALLOW_ANONYMOUS"] = "1" if allow_anonymous else "0"
    if no_cache or cache_mb is not None:
        os.environ["R2SF_CACHE_MB"] = "0" if no_cache else str(max(cache_mb or 0, 0))
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
