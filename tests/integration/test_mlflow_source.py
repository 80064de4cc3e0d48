"""``kind = "mlflow"`` against a real ``mlflow server`` on 127.0.0.1 with its own SQLite
store. The runs are logged through MLflow's REST API, as its clients do; anomon reads
them back through the same API.

MLflow is large and pins its own versions of anomon's dependencies, so it lives in a
virtual environment of its own: ``$ANOMON_MLFLOW`` (the ``mlflow`` program) or
``.venv-mlflow/bin/mlflow`` (``scripts/test`` makes it).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from anomon.config import MlflowSourceConfig
from anomon.sources import MlflowSource, PartialCollection
from tests.conftest import ROOT
from tests.integration.test_prometheus_query import free_port

T0 = 1_765_000_000  # seconds
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _mlflow_program() -> str | None:
    given = os.environ.get("ANOMON_MLFLOW") or str(ROOT / ".venv-mlflow" / "bin" / "mlflow")
    return given if Path(given).is_file() else None


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    program = _mlflow_program()
    if program is None:
        if os.environ.get("ANOMON_REQUIRE_MLFLOW"):
            pytest.fail("mlflow is required here but .venv-mlflow/bin/mlflow is missing")
        pytest.skip("no mlflow server (scripts/test installs one in .venv-mlflow)")
    folder: Path = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log_file = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        [program, "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--default-artifact-root", str(folder / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=log_file,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log = (folder / "server.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"mlflow server did not start: {log}")
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)
        log_file.close()


class Tracking:
    """What an MLflow client does, over the REST API."""

    def __init__(self, url: str) -> None:
        self.api = f"{url}/api/2.0/mlflow"

    def post(self, path: str, body: dict) -> dict:
        reply = httpx.post(f"{self.api}/{path}", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def experiment(self, name: str) -> str:
        return str(self.post("experiments/create", {"name": name})["experiment_id"])

    def run(self, experiment: str, name: str, start_s: int) -> str:
        body = {"experiment_id": experiment, "run_name": name, "start_time": start_s * 1000}
        return str(self.post("runs/create", body)["run"]["info"]["run_id"])

    def log(self, run: str, key: str, points: list[tuple[float, int, int]]) -> None:
        metrics = [
            {"key": key, "value": v, "timestamp": ms, "step": step} for v, ms, step in points
        ]
        self.post("runs/log-batch", {"run_id": run, "metrics": metrics})

    def register(self, model: str, run: str, stage: str | None = None) -> str:
        with contextlib.suppress(AssertionError):  # it exists
            self.post("registered-models/create", {"name": model})
        body = {"name": model, "source": f"runs:/{run}/model", "run_id": run}
        version = str(self.post("model-versions/create", body)["model_version"]["version"])
        if stage:
            self.post("model-versions/transition-stage",
                      {"name": model, "version": version, "stage": stage,
                       "archive_existing_versions": False})  # fmt: skip
        return version


def _source(url: str, **more: object) -> MlflowSource:
    config = MlflowSourceConfig.model_validate(
        {"name": "mlflow", "kind": "mlflow", "url": url, **more}
    )
    return MlflowSource(config)


def _series(samples: list) -> dict[tuple[str, str], list[tuple[int, float]]]:
    found: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for s in samples:
        found.setdefault((s.key.metric, s.key.labels), []).append((s.ts, s.value))
    return found


def test_histories_are_read_in_seconds_once_each_and_steps_in_a_second_are_one_point(
    mlflow: str,
) -> None:
    tracking = Tracking(mlflow)
    experiment = tracking.experiment("churn-training")
    run = tracking.run(experiment, "nightly-1", T0)
    # milliseconds, as MLflow stores them; steps 1 and 2 fall in the same second
    tracking.log(run, "val/acc", [(0.90, T0 * 1000 + 100, 0), (0.91, T0 * 1000 + 60_000, 1),
                                  (0.92, T0 * 1000 + 60_500, 2)])  # fmt: skip
    tracking.log(run, "loss", [(0.5, T0 * 1000 + 100, 0)])
    source = _source(mlflow, experiments=["churn-training"], metrics=["val/*"])
    found = _series(source.collect(NOW))
    labels = '{"experiment":"churn-training","key":"val/acc","run":"nightly-1"}'
    assert found == {("val_acc", labels): [(T0, 0.90), (T0 + 60, 0.92)]}  # never year 58,900
    assert source.collect(NOW) == []  # nothing new: no history is read again
    tracking.log(run, "val/acc", [(0.93, T0 * 1000 + 120_000, 3)])
    assert _series(source.collect(NOW)) == {("val_acc", labels): [(T0 + 120, 0.93)]}
    by_step = _series(_source(mlflow, experiments=["churn-training"], time="step").collect(NOW))
    assert by_step[("val_acc", labels)] == [(T0, 0.90), (T0 + 1, 0.91), (T0 + 2, 0.92),
                                            (T0 + 3, 0.93)]  # fmt: skip
    assert by_step[("loss", '{"experiment":"churn-training","run":"nightly-1"}')] == [(T0, 0.5)]


def test_a_registered_version_labels_its_runs_series_with_model_version_and_stage(
    mlflow: str,
) -> None:
    tracking = Tracking(mlflow)
    experiment = tracking.experiment("fraud-training")
    first = tracking.run(experiment, "fraud-a", T0)
    second = tracking.run(experiment, "fraud-b", T0 + 3600)
    tracking.log(first, "auc", [(0.80, T0 * 1000, 0)])
    tracking.log(second, "auc", [(0.85, (T0 + 3600) * 1000, 0)])
    tracking.register("fraud-model", first, stage="Production")
    source = _source(mlflow, experiments=["fraud-training"])
    found = _series(source.collect(NOW))
    assert found == {
        ("auc", '{"experiment":"fraud-training","model":"fraud-model","run":"fraud-a",'
                '"stage":"Production","version":"1"}'): [(T0, 0.80)],
        ("auc", '{"experiment":"fraud-training","run":"fraud-b"}'): [(T0 + 3600, 0.85)],
    }  # fmt: skip
    # the second run becomes version 2: its history is read again under its new labels
    tracking.register("fraud-model", second)
    again = _series(source.collect(NOW))
    assert again == {
        ("auc", '{"experiment":"fraud-training","model":"fraud-model","run":"fraud-b",'
                '"version":"2"}'): [(T0 + 3600, 0.85)]
    }  # fmt: skip


def test_backfill_reads_the_runs_started_in_its_range_and_a_bad_name_is_told(mlflow: str) -> None:
    tracking = Tracking(mlflow)
    experiment = tracking.experiment("backfilled")
    for day in range(3):
        run = tracking.run(experiment, f"day-{day}", T0 + day * 86_400)
        tracking.log(run, "acc", [(0.9 + day / 100, (T0 + day * 86_400) * 1000, 0)])
    source = _source(mlflow, experiments=["backfilled"])
    chunks = source.backfill_chunks(
        datetime.fromtimestamp(T0 + 86_400, UTC), datetime.fromtimestamp(T0 + 3 * 86_400, UTC)
    )
    samples = [s for start, end in chunks for s in source.collect_range(start, end)]
    assert sorted((json.loads(s.key.labels)["run"], s.ts) for s in samples) == [
        ("day-1", T0 + 86_400), ("day-2", T0 + 2 * 86_400)]  # fmt: skip
    with pytest.raises(PartialCollection) as caught:
        _source(mlflow, experiments=["backfilled", "no-such-experiment"]).collect(NOW)
    assert "experiment 'no-such-experiment' not found" in str(caught.value)
    assert len(caught.value.samples) == 3  # the other experiment's runs are still read


def test_anomon_backfill_stores_the_histories_once(mlflow: str, tmp_path: Path) -> None:
    from anomon import store
    from tests.conftest import run_cli

    tracking = Tracking(mlflow)
    experiment = tracking.experiment("stored")
    run = tracking.run(experiment, "weekly", T0)
    tracking.log(run, "f1", [(0.7 + i / 100, (T0 + 60 * i) * 1000, i) for i in range(20)])
    url = f"sqlite:///{tmp_path / 'anomon.db'}"
    config = tmp_path / "anomon.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n[[sources]]\nname = "mlflow"\nkind = "mlflow"\n'
        f'url = "{mlflow}"\nexperiments = ["stored"]\n'
    )
    assert run_cli("db", "upgrade", "-c", str(config)).returncode == 0
    for _ in range(2):  # a second backfill stores nothing twice
        done = run_cli("backfill", "--source", "mlflow", "--since", "400d", "-c", str(config))
        assert done.returncode == 0, done.stderr
    engine = store.open_engine(url)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT metric, labels, count(*), min(ts), max(value) FROM samples "
            "JOIN series ON series.id = series_id GROUP BY 1, 2"
        ).all()
    engine.dispose()
    assert stored == [("f1", '{"experiment":"stored","run":"weekly"}', 20, T0, 0.7 + 19 / 100)]


def test_a_server_that_is_not_mlflow_fails_the_collection_in_one_line() -> None:
    from anomon.errors import SourceError
    from tests.loopback import serve

    with serve(lambda _path: (200, b"<html>a wiki</html>")) as wiki:
        with pytest.raises(SourceError) as caught:
            _source(wiki, experiments=["churn"]).collect(NOW)
        message = str(caught.value)
        assert message.startswith(f"{wiki}: ") and message.count(wiki) == 1
        assert "experiments/get-by-name: the answer is not JSON" in message
    with pytest.raises(SourceError, match="connection refused"):
        _source(wiki).collect(NOW)  # gone now
