"""The `r2sf` command line as an operator types it: global options (`--config`) before or after
the command, for commands from service/ and sync/ alike, as real subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Databases

R2SF = str(Path(sys.executable).parent / "r2sf")
# Every command; test_top_level_help_lists_every_command keeps this list complete.
COMMANDS = [
    "check",
    "config",
    "demo",
    "discover",
    "migrate",
    "scheduler",
    "serve",
    "status",
    "sync",
]


def config_text(source: str) -> str:
    return (
        f'[source]\nurl = "{source}"\n'
        '[[sync.jobs]]\nname = "items"\nquery = "select id, label from items"\n'
        'target = "public.items"\nkey = ["id"]\n'
    )


@pytest.fixture(scope="module")
def urls(databases: Databases) -> tuple[str, str]:
    source = databases.create(
        "create table items (id int primary key, label text);"
        "insert into items values (1, 'one'), (2, 'two'), (3, 'three');"
    )
    return source, databases.create()


@pytest.fixture
def config(tmp_path: Path, urls: tuple[str, str]) -> Path:
    path = tmp_path / "chosen.toml"
    path.write_text(config_text(urls[0]))
    return path


def r2sf(target: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("REDSHIFT_URL", "R2SF_CONFIG", "PORT")
    }
    full_env.update(DATABASE_URL=target, ODATA_CREDENTIALS="sf:secret", **env)
    return subprocess.run(
        [R2SF, *args], env=full_env, capture_output=True, text=True, timeout=60, cwd=cwd
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["check"], "1 sync job(s)"),
        (["sync", "--dry-run"], "items: would insert 3, update 0, delete 0"),
        (["sync", "items", "--dry-run"], "items: would insert 3, update 0, delete 0"),
        (["discover", "--tables", "items"], 'table = "public.items"'),
    ],
)
def test_config_after_the_command_works_like_before_it(
    urls: tuple[str, str], config: Path, command: list[str], expected: str
) -> None:
    # Run from an empty directory: without the option there is no ./r2sf.toml to fall back on.
    cwd = config.parent / "elsewhere"
    cwd.mkdir()
    before = r2sf(urls[1], cwd, "--config", str(config), *command)
    after = r2sf(urls[1], cwd, command[0], "--config", str(config), *command[1:])
    at_end = r2sf(urls[1], cwd, *command, f"--config={config}")
    assert before.returncode == 0, before.stderr
    assert expected in before.stdout, before.stdout
    for other in (after, at_end):
        assert (other.returncode, other.stdout) == (before.returncode, before.stdout), other.stderr
    # Without --config the same command reads no job: the option made the difference.
    neither = r2sf(urls[1], cwd, *command)
    assert expected not in neither.stdout


def test_config_after_the_command_wins_over_before_it_and_the_environment(
    urls: tuple[str, str], config: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[odata]\npage_size = 5000\n")  # a config error: exit 2 if it were read
    done = r2sf(
        urls[1], tmp_path, "--config", str(broken), "check", "--config", str(config),
        R2SF_CONFIG=str(broken),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"config  {config}: 1 sync job(s)" in done.stdout
    # And the other way round: the broken file given last is the one read.
    done = r2sf(urls[1], tmp_path, "--config", str(config), "check", "--config", str(broken))
    assert done.returncode == 2 and "odata.page_size" in done.stdout


def test_serve_accepts_config_after_the_command(tmp_path: Path) -> None:
    # `serve` would run forever: a config error makes it stop at once, proving the file was read.
    broken = tmp_path / "broken.toml"
    broken.write_text("[server]\nnot_a_key = 1\n")
    done = r2sf("postgresql://127.0.0.1:1/none", tmp_path, "serve", "--config", str(broken))
    assert done.returncode == 2, done.stderr
    assert "unrecognized arguments" not in done.stderr
    assert "not_a_key" in done.stderr and str(broken) in done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_lists_config(command: str, tmp_path: Path) -> None:
    done = r2sf("", tmp_path, command, "--help")
    assert done.returncode == 0, done.stderr
    assert "--config CONFIG" in done.stdout and "r2sf.toml" in done.stdout


def test_top_level_help_lists_config_and_every_command(tmp_path: Path) -> None:
    done = r2sf("", tmp_path, "--help")
    assert done.returncode == 0
    assert "--config CONFIG" in done.stdout
    listed = done.stdout.split("COMMAND", 2)[2].split("options:")[0]
    names = sorted(m.group(1) for m in re.finditer(r"^    (\S+)", listed, re.MULTILINE))
    assert names == COMMANDS


def test_output_piped_into_head_ends_quietly(tmp_path: Path, urls: tuple[str, str]) -> None:
    config = tmp_path / "r2sf.toml"
    config.write_text('[odata]\nexpose = ["public.*"]\n')
    env = {k: v for k, v in os.environ.items() if k not in ("R2SF_CONFIG", "REDSHIFT_URL")}
    env.update(DATABASE_URL=urls[1], ODATA_CREDENTIALS="sf:secret")
    # `head -1` closes the pipe after one line while check still prints.
    done = subprocess.run(
        f"'{R2SF}' --config '{config}' check | head -1",
        shell=True, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.startswith("config")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
