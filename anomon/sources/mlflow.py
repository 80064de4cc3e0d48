"""``kind = "mlflow"``: metric histories of MLflow runs, through MLflow's REST API.

Each collection finds the configured ``experiments`` by name (all active ones when none
is named), searches their newest ``max_runs`` runs (``filter``: MLflow's own run filter
syntax), and for each run whose latest value of a metric key matching ``metrics`` has
changed since the last look, reads that key's whole history (``metrics/get-history``,
paged) and returns the points not returned before. One series per run and key: named by
the key (``_`` for what a metric name cannot hold, the original kept as a ``key``
label), labelled ``experiment`` and ``run`` (the run's name: runs that share a name —
``nightly`` — make one series), and, with ``registered_models``, the ``model``,
``version`` and ``stage`` of the registered model version made from the run (so a new
version is a new entity of detection, started from the last one's rows).

Time: ``timestamp`` (MLflow's milliseconds, turned into seconds — never read as seconds)
where a key's steps within one second are one point, the last step's; or ``step``: the
run's start (seconds) plus the step, so every step is a point of its own and a run's
history stays at the time it ran. Non-finite values are no value. ``anomon backfill``
reads the runs started in the range asked.

Nothing of MLflow is imported: only its HTTP API (``/api/2.0/mlflow/...``), with the
source's limits (``timeout`` for the whole collection, ``max_bytes`` per answer).
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from anomon.config import MlflowSourceConfig
from anomon.errors import SourceError
from anomon.model import Sample, SeriesKey
from anomon.sources.base import Backfillable, metric_name_of, split_range
from anomon.sources.http import Deadline, HttpSource, load_json
from anomon.timeutil import to_epoch

API = "/api/2.0/mlflow"
PAGE = 1000  # runs, experiments and model versions per search page
HISTORY_PAGE = 25_000  # points per history page
# what reading a well-formed JSON answer of the wrong shape raises
_MALFORMED = (AttributeError, KeyError, TypeError, ValueError)


@dataclass(frozen=True, slots=True)
class _Run:
    """What a run search says of one run."""

    run_id: str
    name: str
    experiment: str
    start_s: int
    latest: dict[str, tuple[float, float]]  # key -> (timestamp ms, step) of its last value


@dataclass
class _Found:
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class MlflowSource(HttpSource[MlflowSourceConfig], Backfillable, config=MlflowSourceConfig):
    """Follow the metric histories of an MLflow tracking server's runs."""

    def __init__(self, config: MlflowSourceConfig, **kw: Any) -> None:
        super().__init__(config, **kw)
        self._base = config.url.rstrip("/") + API
        # per (run id, key): the (timestamp ms, step) of the last value looked at and the
        # registered version's labels then; per series: the newest point returned (its
        # time in seconds), so a point is returned once (a run registered later, or moved
        # to another stage, is a series of its own: its history is returned again there)
        self._looked: dict[tuple[str, str], tuple[tuple[float, float], str]] = {}
        self._returned: dict[SeriesKey, int] = {}

    def collect(self, now: datetime) -> list[Sample]:
        """Return the points logged since the last collection (all of them the first
        time); raise PartialCollection for the runs or keys that failed."""
        return self._collect(Deadline(self._config.timeout), started=None)

    def backfill_chunks(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
        """A week of run starts per chunk."""
        return split_range(since, until, timedelta(days=7))

    def collect_range(self, start: datetime, end: datetime) -> list[Sample]:
        """Return the whole histories of the runs started in ``[start, end)``."""
        return self._collect(Deadline(self._config.timeout), started=(start, end))

    def _collect(
        self, deadline: Deadline, started: tuple[datetime, datetime] | None
    ) -> list[Sample]:
        found = _Found()
        try:
            experiments = self._experiments(deadline, found)
            runs = self._runs(experiments, deadline, started) if experiments else []
        except SourceError as exc:  # nothing can be read: said once, after the server
            return self._outcome([], [*found.problems, str(exc)])
        except _MALFORMED:
            return self._outcome([], ["the answer is not an MLflow search result"])
        if not experiments:
            return self._outcome([], found.problems or ["no experiment to read"])
        versions = self._versions(deadline, found) if self._config.registered_models else {}
        for run in runs:
            for key, latest in sorted(run.latest.items()):
                if not self._wanted(key):
                    continue
                registered = versions.get(run.run_id) or {}
                look = (latest, json.dumps(registered, sort_keys=True))
                if started is None and self._looked.get((run.run_id, key)) == look:
                    continue  # nothing logged (or registered) since the last look
                try:
                    points = self._history(run.run_id, key, deadline)
                except SourceError as exc:
                    found.problems.append(f"run {run.name}: {key}: {exc}")
                    continue
                except _MALFORMED:
                    found.problems.append(f"run {run.name}: {key}: not an MLflow metric history")
                    continue
                self._looked[(run.run_id, key)] = look
                found.samples += self._samples(run, key, points, registered)
        if started is None:  # forget the runs that left the newest max_runs: never read again
            listed = {run.run_id for run in runs}
            self._looked = {k: v for k, v in self._looked.items() if k[0] in listed}
        return self._outcome(found.samples, found.problems)

    def _wanted(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self._config.metrics)

    def _api(self, path: str, deadline: Deadline, *, body: dict[str, Any] | None = None) -> Any:
        """One request to MLflow's API (a POST with ``body``, else a GET)."""
        url = f"{self._base}/{path}"
        try:
            if body is None:
                reply = self._get(url, deadline=deadline)
            else:
                data = json.dumps(body).encode()
                reply = self._get(url, deadline=deadline, method="POST", body=data)
        except SourceError as exc:  # the server is named once, in front of every problem
            raise SourceError(str(exc).replace(f"{self._where}{API}/", "")) from None
        try:
            return load_json(reply)
        except ValueError:
            raise SourceError(f"{path.split('?')[0]}: the answer is not JSON") from None

    def _experiments(self, deadline: Deadline, found: _Found) -> dict[str, str]:
        """The experiments to read: id -> name."""
        named = self._config.experiments
        if not named:
            return {
                str(e["experiment_id"]): str(e["name"])
                for e in self._paged("experiments/search", "experiments", deadline, PAGE, body={})
            }
        chosen: dict[str, str] = {}
        for name in named:
            try:
                reply = self._api(
                    f"experiments/get-by-name?{urlencode({'experiment_name': name})}", deadline
                )
                chosen[str(reply["experiment"]["experiment_id"])] = name
            except SourceError as exc:
                found.problems.append(
                    f"experiment {name!r} not found" if "HTTP 404" in str(exc) else str(exc)
                )
        return chosen

    def _runs(
        self,
        experiments: dict[str, str],
        deadline: Deadline,
        started: tuple[datetime, datetime] | None,
    ) -> list[_Run]:
        """The newest ``max_runs`` runs of the experiments (started in ``started``)."""
        conditions = [self._config.filter] if self._config.filter else []
        if started is not None:
            conditions += [
                f"attributes.start_time >= {to_epoch(started[0]) * 1000}",
                f"attributes.start_time < {to_epoch(started[1]) * 1000}",
            ]
        body = {
            "experiment_ids": sorted(experiments),
            "filter": " and ".join(conditions),
            "order_by": ["attributes.start_time DESC"],
        }
        runs = []
        for item in self._paged(
            "runs/search", "runs", deadline, min(PAGE, self._config.max_runs), body=body,
            most=self._config.max_runs,
        ):  # fmt: skip
            info, data = item["info"], item.get("data") or {}
            runs.append(
                _Run(
                    run_id=str(info["run_id"]),
                    name=str(info.get("run_name") or info["run_id"]),
                    experiment=experiments.get(str(info["experiment_id"]), ""),
                    start_s=int(info.get("start_time", 0)) // 1000,
                    latest={
                        str(m["key"]): (float(m.get("timestamp", 0)), float(m.get("step", 0)))
                        for m in data.get("metrics") or []
                    },
                )
            )
        return runs

    def _versions(self, deadline: Deadline, found: _Found) -> dict[str, dict[str, str]]:
        """Run id -> the labels of the newest registered model version made from it."""
        chosen: dict[str, tuple[int, dict[str, str]]] = {}
        try:
            versions = self._paged("model-versions/search", "model_versions", deadline, PAGE)
        except SourceError as exc:
            found.problems.append(f"model versions: {exc}")
            return {}
        except _MALFORMED:
            found.problems.append("model versions: not an MLflow search result")
            return {}
        for item in versions:
            run_id = item.get("run_id")
            if not run_id:
                continue
            number = int(item["version"])
            labels = {"model": str(item["name"]), "version": str(number)}
            stage = item.get("current_stage")
            if stage and stage != "None":
                labels["stage"] = str(stage)
            if run_id not in chosen or number > chosen[run_id][0]:
                chosen[run_id] = (number, labels)
        return {run_id: labels for run_id, (_, labels) in chosen.items()}

    def _history(self, run_id: str, key: str, deadline: Deadline) -> list[tuple[float, int, int]]:
        """Every point of one key of one run: (value, timestamp ms, step)."""
        params = {"run_id": run_id, "metric_key": key, "max_results": HISTORY_PAGE}
        points = []
        for m in self._paged(f"metrics/get-history?{urlencode(params)}", "metrics", deadline, 0):
            points.append((float(m["value"]), int(m.get("timestamp", 0)), int(m.get("step", 0))))
        return points

    def _paged(
        self,
        path: str,
        field_name: str,
        deadline: Deadline,
        size: int,
        *,
        body: dict[str, Any] | None = None,
        most: int | None = None,
    ) -> list[Any]:
        """Every item of a paged search (``page_token`` / ``next_page_token``): a POST of
        ``body`` (and the page) when given, else a GET with the page in the query."""
        items: list[Any] = []
        token = None
        while True:
            if body is None:
                query = {"page_token": token} if token else {}
                if size:
                    query["max_results"] = str(size)
                joiner = "&" if "?" in path else "?"
                reply = self._api(f"{path}{joiner}{urlencode(query)}" if query else path, deadline)
            else:
                ask: dict[str, Any] = dict(body or {})
                ask["max_results"] = size
                if token:
                    ask["page_token"] = token
                reply = self._api(path, deadline, body=ask)
            items += reply.get(field_name) or []
            token = reply.get("next_page_token")
            if not token or (most is not None and len(items) >= most):
                return items[:most] if most is not None else items

    def _samples(
        self,
        run: _Run,
        key: str,
        points: list[tuple[float, int, int]],
        registered: dict[str, str],
    ) -> list[Sample]:
        """The points of one key of one run not returned before, as samples."""
        by_second: dict[int, tuple[int, float]] = {}
        for value, stamp_ms, step in points:
            if not math.isfinite(value):
                continue  # no value
            # MLflow's times are milliseconds: never read as seconds
            by_step = self._config.time == "step"
            second = run.start_s + step if by_step else stamp_ms // 1000
            kept = by_second.get(second)
            if kept is None or step >= kept[0]:
                by_second[second] = (step, value)
        metric = metric_name_of(key)
        labels = {"experiment": run.experiment, "run": run.name, **registered}
        if metric != key:
            labels["key"] = key
        labels.update(self._config.labels)
        series = SeriesKey.of(metric, labels)
        after = self._returned.get(series, -(2**62))
        chosen = sorted((s, v) for s, (_, v) in by_second.items() if s > after)
        if not chosen:
            return []
        self._returned[series] = chosen[-1][0]
        return [Sample(series, self._info, second, value) for second, value in chosen]
