"""The console end to end in a real headless Chromium (Debian's), driven by Playwright.

An admin creates a job from the warehouse catalogue, dry-runs it, runs it, exposes its target
and Salesforce reads it over OData; a second job is made with the keyboard alone. Screenshots of
every page go to the test output directory (R2SF_TEST_OUTPUT, default test-output/console).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Databases
from tests.live import serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
OUT = Path(os.environ.get("R2SF_TEST_OUTPUT", "test-output")) / "console"

SOURCE = """
CREATE TABLE public.items (id int PRIMARY KEY, label text NOT NULL, price numeric(8,2));
INSERT INTO public.items SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 23) g;
CREATE TABLE public.stores (store_id int PRIMARY KEY, city varchar(40));
INSERT INTO public.stores VALUES (1, 'Lyon'), (2, 'Porto');
"""

# Every visible form control must have a label (its own <label for>, or aria-label).
UNLABELLED = """() => Array.from(document.querySelectorAll(
  'input:not([type=hidden]), select, textarea')).filter(el =>
  !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.name || el.id)"""


def _playwright() -> Any:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs Debian's chromium as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    return sync_playwright


@pytest.fixture(scope="module")
def site(databases: Databases) -> Iterator[tuple[str, str]]:
    source = databases.create(SOURCE)
    target = databases.create()
    toml = f'[source]\nurl = "{source}"\n\n[odata]\nexpose = []\n'
    with serve(target, toml, admin="admin:console-pw") as (base, _app):
        yield base, target


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _context(browser: Any, base: str, **kw: Any) -> Any:
    return browser.new_context(
        base_url=base, http_credentials={"username": "admin", "password": "console-pw"}, **kw
    )


def _shot(page: Any, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
    assert (OUT / f"{name}.png").stat().st_size > 5_000  # a blank page compresses to less


def _labelled(page: Any) -> None:
    assert page.evaluate(UNLABELLED) == [], page.url


def _rows(url: str, table: str) -> list[tuple[Any, ...]]:
    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")]
        finally:
            await conn.close()

    # Playwright's sync API keeps an event loop running in this thread: query from another.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def test_admin_creates_runs_and_exposes_a_job_that_salesforce_reads(
    site: tuple[str, str], browser: Any
) -> None:
    base, target = site
    ctx = _context(browser, base, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()

    page.goto("/admin/jobs")
    assert page.locator("#service-url").inner_text() == base + "/odata/v4/"
    _shot(page, "01-jobs-empty")
    page.get_by_role("link", name="New job from the warehouse").click()
    # The catalogue lists the warehouse tables with their keys.
    assert page.get_by_role("cell", name="stores", exact=True).is_visible()
    _labelled(page)
    _shot(page, "02-catalogue")
    page.get_by_role("link", name="Use table items").click()

    # The form comes filled from the catalogue: name, key, columns mapped by name.
    assert page.get_by_label("Job name", exact=True).input_value() == "items"
    assert page.get_by_label("Key columns", exact=True).input_value() == "id"
    assert page.get_by_label("price", exact=True).input_value() == "price"
    _labelled(page)
    page.get_by_label("Target table", exact=True).fill("public.sf_items")
    page.get_by_label("Rows gone from the warehouse", exact=True).select_option("hard")
    page.get_by_label("Schedule", exact=True).fill("0 3 * * *")
    page.get_by_role("button", name="Preview rows and schedule").click()
    assert page.get_by_role("cell", name="item 5", exact=True).is_visible()
    preview = page.locator("#schedule-preview").inner_text()
    assert preview.startswith("every day at 03:00 UTC") and preview.count("03:00 UTC") == 6
    # A new target: its columns will be created with the warehouse's types.
    assert page.get_by_text("new column: numeric(8,2)").is_visible()
    _shot(page, "03-job-preview")

    # A bad value is refused with the same message r2sf.toml gets, and the field is marked.
    page.get_by_label("Most deletes per run", exact=True).fill("ten")
    page.get_by_role("button", name="Save").click()
    alert = page.get_by_role("alert").inner_text()
    assert "sync.jobs[0].max_deletes" in alert and "neither a count" in alert
    assert (
        page.get_by_label("Most deletes per run", exact=True).get_attribute("aria-invalid")
        == "true"
    )
    page.get_by_label("Most deletes per run", exact=True).fill("")
    page.get_by_role("button", name="Save").click()
    assert "Saved as version 1" in page.get_by_role("status").first.inner_text()

    page.get_by_role("button", name="Dry run").click()
    dry = page.locator('.result[data-action="dry run"]')
    dry.wait_for(timeout=60_000)
    assert "would insert 23, update 0, delete 0" in dry.inner_text()
    assert _rows(target, "pg_tables WHERE tablename = 'sf_items'") == []  # nothing written
    _shot(page, "04-job-dry-run")

    page.get_by_role("button", name="Run now").click()
    done = page.locator('.result[data-action="run now"]')
    done.wait_for(timeout=60_000)
    assert "inserted 23, updated 0, deleted 0" in done.inner_text()
    assert len(_rows(target, "public.sf_items")) == 23

    page.get_by_role("link", name="Jobs").click()
    row = page.get_by_role("row").filter(has_text="items")
    assert "every day at 03:00 UTC" in row.inner_text() and "ok" in row.inner_text()

    # Expose the target under a Salesforce-friendly name.
    page.get_by_role("link", name="Sets").click()
    _labelled(page)
    page.get_by_label("public.sf_items", exact=True).check()
    page.locator("#n-public-sf_items").fill("Item")
    page.get_by_role("button", name="Save exposed sets").click()
    assert "Saved as version 2" in page.get_by_role("status").first.inner_text()
    body = _odata_when_served(base, "/odata/v4/Item?$orderby=id&$top=3")
    assert body["value"] == [
        {"id": 1, "label": "item 1", "price": 1.25},
        {"id": 2, "label": "item 2", "price": 2.5},
        {"id": 3, "label": "item 3", "price": 3.75},
    ]
    page.reload()
    assert page.get_by_role("heading", name="Item ← public.sf_items").is_visible()
    # Each property's Salesforce field type, and r2sf check's warning about the unbounded text.
    price = page.get_by_role("row").filter(has_text="Edm.Decimal").inner_text()
    assert price.split() == ["price", "price", "Edm.Decimal", "Number(8,2)"]
    assert "Item.label: String without MaxLength becomes Text(128)" in page.inner_text("main")
    _shot(page, "05-sets")

    page.get_by_role("link", name="History").click()
    assert page.get_by_role("row").filter(has_text="changed exposed sets").is_visible()
    assert page.get_by_role("row").filter(has_text="added job items").is_visible()
    _labelled(page)
    _shot(page, "06-history")
    page.get_by_role("link", name="Status").click()
    assert page.get_by_role("cell", name="Item", exact=True).is_visible()
    assert page.locator("svg text", has_text="run start (UTC)").count() == 1
    _shot(page, "07-status")

    # Roll back to version 1: the set disappears from OData again.
    page.get_by_role("link", name="History").click()
    page.get_by_role("button", name="Roll back to version 1").click()
    assert "saved as version 3" in page.get_by_role("status").first.inner_text()
    _odata_when_served(base, "/odata/v4/Item", status=404)
    ctx.close()


def test_a_job_can_be_made_with_the_keyboard_alone_and_pages_fit_a_phone(
    site: tuple[str, str], browser: Any
) -> None:
    base, _target = site
    ctx = _context(browser, base, viewport={"width": 390, "height": 844}, is_mobile=True)
    page = ctx.new_page()
    page.goto("/admin/jobs/new")

    def tab_to(predicate: str, limit: int = 250) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(f"() => {{ const el = document.activeElement; return {predicate}; }}"):
                return
        raise AssertionError(f"Tab never reached {predicate}")

    tab_to("el.getAttribute('aria-label') === 'Use table stores'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/jobs/new?table=*")
    tab_to("el.name === 'target'")
    page.keyboard.press("Control+A")
    page.keyboard.type("public.stores_copy")
    tab_to("el.name === 'schedule'")
    page.keyboard.type("*/15 * * * *")
    tab_to("el.tagName === 'BUTTON' && el.value === 'save'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin/jobs/stores?saved=*")
    assert page.get_by_label("Schedule", exact=True).input_value() == "*/15 * * * *"
    assert "every 15 minutes" in page.locator("#schedule-preview").inner_text()
    for path, name in (("/admin/jobs/stores", "phone-job"), ("/admin/jobs", "phone-jobs"),
                       ("/admin/sets", "phone-sets"), ("/", "phone-status")):  # fmt: skip
        page.goto(path)
        _labelled(page)
        # Nothing wider than the phone: the page scrolls down, not sideways.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, path
        _shot(page, name)
    ctx.close()


def _odata_when_served(base: str, path: str, status: int = 200) -> Any:
    """The OData answer once the saved configuration is served (the service polls for it)."""
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(base + path, auth=("sf", "secret"), timeout=10)
        if r.status_code == status or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == status, r.text
    return r.json()
