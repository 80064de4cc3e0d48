"""``anomon demo`` end to end: the real daemon finds the injected incidents and the
webhook sink hears of them."""

from __future__ import annotations

import re
from pathlib import Path

from anomon import store
from tests.conftest import run_cli


def test_the_demo_finds_what_it_injects_and_notifies(tmp_path: Path) -> None:
    result = run_cli("demo", "--minutes", "1.5", "--dir", str(tmp_path), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    for name in ("accuracy drop", "latency spike"):
        assert re.search(rf"^  {name}: detected \d+ s after it began", text, re.M), text
    assert "  latency spike ends" in text
    sent = re.search(r"notifications received: (\d+) \((.*)\)", text)
    assert sent is not None and int(sent.group(1)) >= 2, text
    assert "firing" in sent.group(2)

    engine = store.open_engine(f"sqlite:///{tmp_path / 'anomon.db'}")
    try:
        status = store.read_status(engine)
        assert [s.source for s in status.sources] == ["churn", "fraud"]
        assert all(s.last_error is None for s in status.sources)
        assert sum(status.series_by_quality.values()) == 8  # history and live: the same series
        assert status.outbox.get("sent", 0) >= 2 and "dead" not in status.outbox
    finally:
        engine.dispose()
    assert "Traceback" not in (tmp_path / "anomon.log").read_text()
