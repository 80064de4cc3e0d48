"""The console in a real browser (Debian's Chromium, driven by Playwright), served by the
real daemon on a real database: what a person on call does from a notification — follow
its link, read the incident (a hostile name shown as text, the chart drawn), acknowledge
it, silence incidents like it, resolve it and see that notice silenced. A screenshot of
each page is saved in the test's temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from anomon import store
from anomon.store.schema import Notification
from anomon.timeutil import to_epoch
from tests.integration.test_daemon import start_daemon, stop
from tests.integration.test_web_console import seed_hosts
from tests.loopback import free_port, receive

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


def _until(what: str, check: Callable[[], Any], seconds: float = 60) -> Any:
    """``check()`` once it is truthy (within ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_person_on_call_follows_a_notification_into_the_console_and_acts(
    tmp_path: Path, browser: Any, database_url: str
) -> None:
    url = database_url
    engine = store.open_engine(url)
    store.upgrade(engine)
    now = datetime.now(UTC)
    seed_hosts(engine, start=to_epoch(now) // 60 * 60 - 60 * 900, hostile=HOSTILE, now=now,
               detect=False)  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with receive() as hook:
        config = (
            '[database]\nurl = "{url}"\n'
            f'[daemon]\nmetrics_listen = "127.0.0.1:{free_port()}"\nexternal_url = "{base}"\n'
            f'[web]\nlisten = "127.0.0.1:{port}"\n'
            '[detection]\ninterval = "1s"\nseasonality = []\n'
            "[detection.forest]\nmin_train = 200\n"
            '[alerts]\nreceiver = "hook"\ngroup_wait = "0s"\ngroup_interval = "1s"\n'
            '[alerts.delivery]\ninterval = "1s"\n'
            f'[[alerts.receivers]]\nname = "hook"\nkind = "webhook"\nurl = "{hook.url}/hook"\n'
        )
        daemon = start_daemon(tmp_path, url, config)
        try:
            # the daemon scores the stored history, opens two incidents and tells the hook
            bodies = _until(
                "the firing notifications",
                lambda: [json.loads(r.body) for r in hook.requests] if len(hook.requests) >= 2
                else None,
            )  # fmt: skip
            links = {b["incidents"][0]["entity"]: b["incidents"][0]["url"] for b in bodies}
            assert set(links) == {"db-1", HOSTILE}
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            # the link in the notification about the hostile host
            page.goto(links[HOSTILE])
            page.wait_for_load_state("load")  # its chart included
            heading = page.inner_text("h1")
            assert heading.startswith("Incident ") and HOSTILE in heading  # text, not markup
            chart = page.locator("figure img").first
            drawn = "img => img.complete && img.naturalWidth > 0"
            assert page.evaluate(drawn, chart.element_handle()), chart.get_attribute("src")
            assert "firing notification to hook: sent" in page.inner_text("ol.timeline")
            page.screenshot(path=str(shots / "incident.png"), full_page=True)
            incident_id = int(links[HOSTILE].rsplit("/", 1)[1])
            # acknowledge: the database says so
            page.get_by_role("button", name="Acknowledge").click()
            assert "acknowledged: it is no longer repeated" in page.inner_text("main")
            detail = store.incident_detail(engine, incident_id, anomaly_limit=0)
            assert detail.acknowledged_at is not None
            # silence incidents like it, from its page
            page.get_by_role("button", name="Silence like this…").click()
            assert "host=" in page.input_value("textarea[name=matchers]")
            assert f"{incident_id}" in page.inner_text("ul")  # the preview covers it
            page.fill("input[name=comment]", "looking into it")
            page.get_by_role("button", name="Silence", exact=True).click()
            assert "looking into it" in page.inner_text("table")
            page.screenshot(path=str(shots / "silences.png"), full_page=True)
            # resolve it: its resolved notice falls under the silence, nothing is sent
            page.goto(links[HOSTILE])
            page.get_by_role("button", name="Resolve").click()
            assert "resolved" in page.inner_text("main")
            told = len(hook.requests)

            def resolved_notice() -> list[str]:
                with engine.connect() as conn:
                    return list(conn.execute(
                        select(Notification.status).where(
                            Notification.incident_id == incident_id,
                            Notification.event == "resolved",
                        )
                    ).scalars())  # fmt: skip

            # queued as pending, then recorded silenced by the delivery job, never sent
            _until("the resolved notice silenced", lambda: resolved_notice() == ["silenced"])
            assert len(hook.requests) == told
            # the other pages, as a person browses them
            page.goto(f"{base}/")
            assert "running: pid" in page.inner_text("main")
            page.screenshot(path=str(shots / "overview.png"), full_page=True)
            page.goto(f"{base}/incidents?status=firing")
            rows = page.locator("table.incidents tbody tr")
            assert rows.count() == 1 and "db-1" in rows.first.inner_text()
            page.screenshot(path=str(shots / "incidents.png"), full_page=True)
            page.get_by_role("link", name="Series").click()
            page.get_by_role("link").filter(has_text='cpu{"host":"db-1"}').first.click()
            page.get_by_role("link", name="6h", exact=True).click()
            page.wait_for_load_state("load")
            assert page.evaluate(drawn, page.locator("figure img").first.element_handle())
            page.screenshot(path=str(shots / "series.png"), full_page=True)
            assert dialogs == []  # nothing the data held ever ran
            page.close()
        finally:
            stderr = stop(daemon)
            engine.dispose()
    assert daemon.returncode == 0, stderr
    assert f"console on {base}/" in stderr
    assert sorted(p.name for p in shots.iterdir()) == [
        "incident.png", "incidents.png", "overview.png", "series.png", "silences.png"]  # fmt: skip
