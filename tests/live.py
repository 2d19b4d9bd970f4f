"""Run the real service (uvicorn + httptools) in a background thread for HTTP tests."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from service.app import App
from service.config import load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(
    database_url: str,
    toml: str,
    *,
    credentials: str = "sf:secret",
    allow_anonymous: bool = False,
    env: dict[str, str] | None = None,
    admin: str | None = None,
) -> Iterator[tuple[str, App]]:
    """Yield (base URL, app) for a server on an ephemeral port, stopped on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "r2sf.toml"
        config.write_text(toml)
        environ = {"DATABASE_URL": database_url, "ODATA_CREDENTIALS": credentials, **(env or {})}
        if admin is not None:
            environ["ADMIN_CREDENTIALS"] = admin
        settings = load_settings(str(config), environ)
        app = App(settings, allow_anonymous=allow_anonymous)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                loop="asyncio",
                http="httptools",
                lifespan="on",
                log_level="warning",
                access_log=False,
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the test server failed to start (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start within 20 s")
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}", app
        finally:
            server.should_exit = True
            thread.join(timeout=10)
