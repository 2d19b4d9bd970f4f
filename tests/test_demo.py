"""`r2sf demo` run as a user runs it: a subprocess in an empty directory, queried over HTTP.

The answers are compared with the demo's own warehouse tables, read directly from the embedded
PostgreSQL whose URL the demo prints. Stopping must leave no process behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from tests.live import free_port

R2SF = str(Path(sys.executable).parent / "r2sf")
ROWS = 2000


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def close(self) -> None:
        """Kill whatever is left (a failed test) and release the pipe."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.reader is not None:
            self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 60) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if any(needle in line for line in self.lines):
                return time.monotonic() - start
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader collect the last lines
                break
            time.sleep(0.05)
        raise AssertionError(f"the demo never printed {needle!r}; output:\n{self.output()}")


def start_demo(cwd: Path, port: int, rows: int = ROWS) -> Demo:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "R2SF_CONFIG")}
    proc = subprocess.Popen(
        [R2SF, "demo", "--rows", str(rows), "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    demo = Demo(proc)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            demo.lines.append(line.rstrip("\n"))

    demo.reader = threading.Thread(target=read, daemon=True)
    demo.reader.start()
    return demo


def curl_commands(demo: Demo) -> list[tuple[str, str, str]]:
    """(user, password, url) of every `curl -u 'user:pass' 'url'` line the demo printed."""
    found = []
    for line in demo.lines:
        m = re.search(r"curl -u '([^':]+):([^']+)' '([^']+)'", line)
        if m:
            found.append((m.group(1), m.group(2), m.group(3)))
    return found


def printed_database_url(demo: Demo) -> str:
    m = re.search(r"DATABASE_URL='([^']+)'", demo.output())
    assert m, demo.output()
    return m.group(1)


def stop(demo: Demo, sig: int) -> tuple[int, list[psutil.Process]]:
    """Send `sig`; return the exit code and whatever of the process tree is still alive."""
    tree = [psutil.Process(demo.proc.pid), *psutil.Process(demo.proc.pid).children(recursive=True)]
    demo.proc.send_signal(sig)
    code = demo.proc.wait(timeout=30)
    _, alive = psutil.wait_procs(tree, timeout=5)
    return code, alive


def postmaster_pid(cwd: Path) -> int:
    return int((cwd / ".r2sf" / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def demo_dir() -> Iterator[Path]:
    # Not tmp_path: pytest prunes old basetemp directories when other sessions start, which
    # would delete the embedded server's data under a long-running demo.
    path = Path(tempfile.mkdtemp(prefix="r2sf-demo-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_demo_serves_the_printed_urls_and_ctrl_c_stops_everything(demo_dir: Path) -> None:
    port = free_port()
    demo = start_demo(demo_dir, port)
    try:
        seconds = demo.wait_for("r2sf demo is ready")
        commands = curl_commands(demo)
        assert len(commands) >= 2, demo.output()
        user, password, metadata_url = commands[0]
        assert metadata_url == f"http://127.0.0.1:{port}/odata/v4/$metadata"
        meta = httpx.get(metadata_url, auth=(user, password), timeout=10)
        print(f"demo: ready after {seconds:.1f} s ({ROWS} rows, fresh .r2sf/)")
        assert meta.status_code == 200, meta.text
        assert meta.headers["content-type"].startswith("application/xml")
        for entity_set in ("Category", "Event", "SalesByEventMonth"):
            assert f'EntitySet Name="{entity_set}"' in meta.text
        assert httpx.get(metadata_url, timeout=10).status_code == 401

        # The filtered query the demo suggests answers what the warehouse holds.
        _, _, filtered_url = commands[1]
        got = httpx.get(filtered_url, auth=(user, password), timeout=10)
        assert got.status_code == 200, got.text
        rows = asyncio.run(
            fetch(
                printed_database_url(demo),
                "SELECT catid, catname FROM warehouse.category"
                " WHERE catgroup = 'Concerts' ORDER BY catid",
            )
        )
        assert rows, "the demo warehouse has no concert categories"
        assert sorted((v["catid"], v["catname"]) for v in got.json()["value"]) == [
            (r["catid"], r["catname"]) for r in rows
        ]
        postmaster = postmaster_pid(demo_dir)
        assert psutil.pid_exists(postmaster)
        code, alive = stop(demo, signal.SIGINT)
    finally:
        demo.close()
    assert code == 0, demo.output()
    assert alive == [], f"still running after Ctrl-C: {alive}"
    assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == "zombie"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_second_demo_reuses_the_data_writes_nothing_and_sigterm_stops_everything(
    demo_dir: Path,
) -> None:
    if not (demo_dir / ".r2sf" / "pgdata" / "PG_VERSION").exists():
        first = start_demo(demo_dir, free_port())
        try:
            first.wait_for("r2sf demo is ready")
            stop(first, signal.SIGINT)
        finally:
            first.close()
    password = (demo_dir / ".r2sf" / "demo-password").read_text().strip()
    demo = start_demo(demo_dir, free_port())
    try:
        demo.wait_for("r2sf demo is ready")
        assert "reusing the demo warehouse" in demo.output()
        synced = [line for line in demo.lines if "synced " in line]
        assert len(synced) == 3, demo.output()
        # Unchanged source data: every job writes zero rows on the second run.
        for line in synced:
            assert re.search(r"inserted 0, updated 0, deleted 0", line), line
        assert curl_commands(demo)[0][1] == password  # the copied curl commands keep working
        postmaster = postmaster_pid(demo_dir)
        code, alive = stop(demo, signal.SIGTERM)
    finally:
        demo.close()
    assert code == 0, demo.output()
    assert alive == []
    assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == "zombie"


def test_demo_refuses_a_port_in_use_and_starts_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [R2SF, "demo", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "--port" in result.stderr
    assert not (tmp_path / ".r2sf").exists()
