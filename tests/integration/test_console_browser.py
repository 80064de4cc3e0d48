"""The console in a real browser (Debian's Chromium, driven by Playwright), served by the
real daemon: what a person on call sees, with a hostile name in the data."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from anomon import store
from anomon.timeutil import to_epoch
from tests.integration.test_daemon import start_daemon, stop
from tests.integration.test_web_console import seed_hosts
from tests.loopback import free_port

HOSTILE = '<img src=x onerror=alert(1)><script>alert("x")</script>'


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    program = _chromium()
    if program is None:
        if os.environ.get("ANOMON_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here but not installed")
        pytest.skip("no chromium (scripts/test installs Debian's)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=program, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def _seed(url: str) -> None:
    """Two hosts' cpu over the last 15 hours, jumping in the last 40 minutes."""
    engine = store.open_engine(url)
    store.upgrade(engine)
    now = datetime.now(UTC)
    seed_hosts(engine, start=to_epoch(now) // 60 * 60 - 60 * 900, hostile=HOSTILE, now=now)
    engine.dispose()


def test_a_person_on_call_reads_the_overview_and_an_incident_in_a_browser(
    tmp_path: Path, browser: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'console.db'}"
    _seed(url)
    port = free_port()
    config = (
        '[database]\nurl = "{url}"\n'
        f'[daemon]\nmetrics_listen = "127.0.0.1:{free_port()}"\n'
        f'[web]\nlisten = "127.0.0.1:{port}"\n'
        "[detection]\nseasonality = []\n"
    )
    daemon = start_daemon(tmp_path, url, config)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/overview.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert daemon.poll() is None and time.monotonic() < deadline, "no console"
            time.sleep(0.2)
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{base}/")
        assert "Firing incidents: 2" in page.inner_text("main")
        assert "running: pid" in page.inner_text("main")  # the daemon that serves it
        shown = json.dumps(HOSTILE)[1:-1]  # the label's value as the series' name writes it
        page.get_by_role("link").filter(has_text=shown).first.click(timeout=5000)
        heading = page.inner_text("h1")
        assert heading.startswith("Incident ") and shown in heading  # text, not markup
        page.wait_for_load_state("load")  # images included
        chart = page.locator("figure img").first
        loaded = "img => img.complete && img.naturalWidth > 0"
        assert page.evaluate(loaded, chart.element_handle()), chart.get_attribute("src")
        assert "opened" in page.inner_text("ol.timeline")
        page.screenshot(path=str(tmp_path / "incident.png"), full_page=True)
        # the forms work in a browser: its session cookie and Origin pass the CSRF check
        page.get_by_role("button", name="Acknowledge").click()
        assert "acknowledged: it is no longer repeated" in page.inner_text("main")
        page.get_by_role("button", name="Silence like this…").click()
        assert "host=" in page.input_value("textarea[name=matchers]")
        page.fill("input[name=comment]", "looking into it")
        page.get_by_role("button", name="Silence", exact=True).click()
        assert "looking into it" in page.inner_text("table")
        page.goto(f"{base}/incidents?status=firing&entity=db-1")
        rows = page.locator("table.incidents tbody tr")
        assert rows.count() == 1 and "db-1" in rows.first.inner_text()
        assert dialogs == []  # nothing the data held ever ran
        page.close()
    finally:
        stderr = stop(daemon)
    assert daemon.returncode == 0, stderr
    assert f"console on http://127.0.0.1:{port}/" in stderr
