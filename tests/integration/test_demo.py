"""``anomon demo`` end to end: the real daemon finds the injected incidents and the
webhook sink hears of them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from anomon import store
from tests.conftest import ROOT


def test_the_demo_finds_what_it_injects_and_notifies(tmp_path: Path) -> None:
    lines: list[str] = []
    console: dict[str, object] = {}
    errors = ""
    with subprocess.Popen(
        [sys.executable, "-m", "anomon", "demo", "--minutes", "1.5", "--dir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # its lines as it prints them
    ) as demo:  # fmt: skip
        try:
            assert demo.stdout is not None and demo.stderr is not None
            for line in demo.stdout:  # the demo prints as it goes; it ends after its run
                lines.append(line)
                found = re.match(r"  console       (http://127\.0\.0\.1:\d+/)", line)
                if line.startswith("  daemon        pid") and "url" in console:
                    console["overview"] = _overview(str(console["url"]))
                if found:
                    console["url"] = found.group(1)
            errors = demo.stderr.read()
            demo.wait(timeout=240)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait(timeout=30)
    text = "".join(lines)
    assert demo.returncode == 0, text + errors
    # the console answered while the daemon ran, at the address the demo printed
    overview = console.get("overview")
    assert isinstance(overview, dict) and overview["daemons"][0]["alive"] is True, console
    for name in ("accuracy drop", "latency spike"):
        assert re.search(rf"^  {name}: detected \d+ s after it began", text, re.M), text
    assert "  latency spike ends" in text
    sent = re.search(r"notifications received: (\d+) \((.*)\)", text)
    assert sent is not None and int(sent.group(1)) >= 2, text
    assert "firing" in sent.group(2)
    # the credit model's drift is told from its scores before its labels land, and its
    # retraining command runs
    scores = re.search(
        r"^  model drift from its scores alone: told (\d+) s after it began "
        r"\(incident #\d+, \w+; estimated_accuracy ([0-9.]+) \(expected ([0-9.]+)\)",
        text,
        re.M,
    )
    assert scores is not None, text
    estimate, usual = float(scores.group(2)), float(scores.group(3))
    assert estimate < usual - 0.03 and usual > 0.85, text  # the estimate, from scores alone
    labels = re.search(r"^  model drift from its labels: told (\d+) s after", text, re.M)
    if labels is not None:  # the labels land 30 s later: perhaps after the end
        assert int(labels.group(1)) > int(scores.group(1)), text
    assert re.search(r"^  retraining command ran \d+ time", text, re.M), text
    retrained = (tmp_path / "retrain.log").read_text().splitlines()
    assert retrained and "retraining credit after incident #" in retrained[0]

    engine = store.open_engine(f"sqlite:///{tmp_path / 'anomon.db'}")
    try:
        status = store.read_status(engine)
        assert sorted(s.source for s in status.sources) == ["churn", "credit", "fraud"]
        assert all(s.last_error is None for s in status.sources)
        for model in ("churn", "fraud"):  # history and live: the same series
            assert len(store.search_series(engine, entity=f"{model}-model")) == 4
        assert status.outbox.get("sent", 0) >= 2 and "dead" not in status.outbox
    finally:
        engine.dispose()
    assert "Traceback" not in (tmp_path / "anomon.log").read_text()


def _overview(url: str) -> dict[str, Any]:
    """The console's overview as JSON, once it answers (within 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            reply = httpx.get(f"{url}overview.json", timeout=5)
            if reply.status_code == 200:
                found: dict[str, Any] = reply.json()
                return found
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.5)
