"""The error catalogue: docs/errors.md lists every error class of odata/errors.py and
sync/errors.py with its code and status (or exit code), and every code belongs to one class.
A class added without a row, a row left for a removed class, a changed status or a second
class with the same code each fail here."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import odata
import service
import sync
from odata.errors import ODataError
from service.errors import Entry, catalogue
from sync import errors as sync_errors

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
ROW = re.compile(r"^\| `(\w+)` \| (\d+) \| (.+?) \| (.+?) \|$")


def documented() -> dict[str, tuple[int, str, str]]:
    rows: dict[str, tuple[int, str, str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is listed twice"
            rows[m.group(1)] = (int(m.group(2)), m.group(3), m.group(4))
    return rows


ENTRIES = catalogue()


def test_the_catalogue_covers_both_trees() -> None:
    # Guards the parametrised test below against passing over an empty or partial catalogue.
    codes = {e.code for e in ENTRIES}
    assert {"InvalidSyntax", "DeltaLinkGone", "InternalError", "ConfigError", "LockHeld"} <= codes
    assert len(documented()) >= 30


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.code for e in ENTRIES])
def test_every_error_code_is_published_with_its_status(entry: Entry) -> None:
    rows = documented()
    assert entry.code in rows, f"{entry.cls.__name__} ({entry.code}) is missing from docs/errors.md"
    status, meaning, action = rows[entry.code]
    assert status == entry.status
    assert meaning.strip() and action.strip()


def test_every_published_code_is_raised_by_one_class() -> None:
    codes = [e.code for e in ENTRIES]
    assert sorted(set(codes)) == sorted(codes), "two classes share a code"
    assert sorted(documented()) == sorted(codes), "docs/errors.md lists a code no class has"


def test_no_error_class_lives_outside_its_tree_module() -> None:
    # A subclass defined elsewhere would be raised without being catalogued.
    for package in (odata, sync, service):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
    stray: list[str] = []
    for root in (ODataError, sync_errors.Error):
        todo = list(root.__subclasses__())
        while todo:
            cls = todo.pop()
            todo += cls.__subclasses__()
            if cls.__module__.split(".")[0] in ("odata", "sync", "service") and (
                cls.__module__ != root.__module__
            ):
                stray.append(f"{cls.__module__}.{cls.__name__}")
    assert stray == []
