"""``anomon demo``: the whole loop on one machine, in a few minutes.

Starts a simulated model server (:mod:`.simulator`) and a webhook sink on 127.0.0.1,
writes a day of history into a fresh SQLite database and scores it (no alerts: it is
normal data, so whatever it finds is the false-alarm rate), then runs the real daemon
(``anomon run`` as a subprocess) against the server while the scenario injects a memory
leak, an accuracy drop and a latency spike. Beside them a credit model logs its
predictions to a file, its labels landing later in another (:mod:`.predictions`); its
inputs drift, and a retraining command (a ``command`` receiver) is run for its quality
incidents. It prints each injection, notification and retraining run as it happens,
then what was found and how long it took.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from anomon import store
from anomon.config import AlertsConfig, PrometheusScrapeSourceConfig, load_config
from anomon.demo.predictions import LABEL_LAG, MODEL, RATE, PredictionLog
from anomon.demo.servers import Delivery, model_server, webhook_sink
from anomon.demo.simulator import METRICS, MODELS, Incident, Scenario, values
from anomon.model import IncidentRecord, IncidentStatus, Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import BEFORE_LABELS, DetectJob
from anomon.sources.prometheus_scrape import target_labels

STEP = 5  # seconds between samples, in the history and live
DRIFT_AT = 0.2  # the credit model's inputs drift this far into the live part
RETRAIN_LOG = "retrain.log"  # what the retraining command did, one line per incident
HISTORY = 86_400  # seconds of history written before the daemon starts
KINDS = {
    "model_accuracy": SeriesKind.QUALITY,
    "request_latency_p99_ms": SeriesKind.LATENCY,
}
CONFIG = """\
# written by `anomon demo`: the daemon's config for this run
[database]
url = {db}

[daemon]
metrics_listen = "127.0.0.1:{metrics_port}"
shutdown_timeout = "10s"
external_url = "http://127.0.0.1:{web_port}"

[web]
listen = "127.0.0.1:{web_port}"

[detection]
interval = "{step}s"

[alerts]
receiver = "sink"
group_wait = "1s"
group_interval = "{step}s"

[alerts.delivery]
interval = "1s"

[[alerts.routes]]  # the credit model's quality and drift: start its retraining ...
receiver = "retrain"
match = {{ source = "{credit}" }}
continue = true

[[alerts.routes]]  # ... and tell the sink of it too
receiver = "sink"
match = {{ source = "{credit}" }}

[[alerts.receivers]]
name = "sink"
kind = "webhook"
url = {sink}

[[alerts.receivers]]
name = "retrain"
kind = "command"
command = {retrain}
timeout = "30s"
{sources}"""
RETRAIN = """\
# written by `anomon demo`: the retraining pipeline a quality incident of the credit
# model starts (its command receiver runs this, the notification as JSON on stdin)
import json
import sys
import time

notification = json.load(sys.stdin)
if notification.get("event") != "firing":  # resolved, acknowledged: nothing to retrain
    sys.exit(0)
with open({log}, "a", encoding="utf-8") as out:
    for incident in notification.get("incidents", []):
        out.write(
            f"{{time.time():.3f}} retraining {{incident.get('labels', {{}}).get('model', '?')}} "
            f"after incident #{{incident.get('id')}} "
            f"({{incident.get('metric')}} {{notification.get('event')}})\\n"
        )
print("retraining started")
"""
SOURCE = """
[[sources]]
name = "{model}"
kind = "prometheus_scrape"
url = {url}
interval = "{step}s"
timeout = "3s"
entity = "{model}-model"
"""

Print = Callable[[str], None]


def run_demo(minutes: float, workdir: Path | None = None, out: Print = print) -> int:
    """Run the demo for ``minutes`` of live time; return the exit code (1 if the daemon
    stopped by itself). The database, config and daemon log stay in ``workdir``."""
    folder = workdir or Path(tempfile.mkdtemp(prefix="anomon-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    seconds = minutes * 60
    out(f"anomon demo: {minutes:g} minute(s) live, working in {folder}")
    live: list[Scenario] = []  # the scenario, once the daemon is about to start
    with (
        webhook_sink() as (sink_url, received),
        model_server(lambda: live[0] if live else None) as server,
    ):
        web_port = _free_port()
        credit = PredictionLog(folder)
        config_path = _write_config(folder, server, sink_url, web_port, credit)
        paths = ",".join(MODELS)
        shape = f"{len(MODELS)} models x {len(METRICS)} metrics, noise and a daily shape"
        out(f"  model server  {server}/metrics/{{{paths}}}  ({shape})")
        out(f"  webhook sink  {sink_url}")
        out(f"  console       http://127.0.0.1:{web_port}/  (while the daemon runs)")
        written = credit.start(time.time())
        out(
            f"  {MODEL} model  {RATE} predictions/s to {credit.log.name}, each label "
            f"{LABEL_LAG} s later to {credit.labels.name} ({written:,} rows of history)"
        )
        _history(config_path, out)
        daemon, log_path = _start_daemon(config_path, folder)
        try:
            out(f"  daemon        pid {daemon.pid}, log {log_path}")
            start = time.time()
            live.append(Scenario.starting(start, seconds))
            scenario = live[0]
            credit.drift_at = start + DRIFT_AT * seconds
            out("schedule, from the start of the live part:")
            for incident in scenario.incidents:
                out(f"  {_clock(incident.start - start)}  {_describe(incident, start)}")
            out(
                f"  {_clock(credit.drift_at - start)}  {'model drift':<14} {MODEL} inputs "
                f"drift: accuracy 0.88 -> 0.69, its labels {LABEL_LAG} s late"
            )
            with _interrupted_by_signals():
                live_run = _Live(daemon, scenario, credit, received, start, start + seconds)
                deliveries = live_run.watch(out)
            code = _stop(daemon, log_path, out)
        finally:  # Ctrl-C, SIGTERM, a closed pipe: never leave the daemon behind
            _kill(daemon)
    _findings(config_path, scenario, deliveries, start, out)
    _drift_findings(credit, deliveries, live_run.retrained, out)
    out("explore what it wrote:")
    out(f"  anomon incidents list --all -c {config_path}")
    out(f"  anomon anomalies --since 2h -c {config_path}")
    out(f"  anomon plot model_accuracy --label model=churn --since 2h -c {config_path}")
    return code


def _write_config(
    folder: Path, server: str, sink: str, web_port: int, credit: PredictionLog
) -> Path:
    # JSON strings are TOML basic strings: quotes and backslashes in a path stay intact
    sources = "".join(
        SOURCE.format(model=m, url=json.dumps(f"{server}/metrics/{m}"), step=STEP) for m in MODELS
    )
    sources += credit.source(STEP)
    script = folder / "retrain.py"
    script.write_text(RETRAIN.format(log=json.dumps(str(folder / RETRAIN_LOG))), "utf-8")
    text = CONFIG.format(
        credit=MODEL,
        retrain=json.dumps([sys.executable, str(script)]),
        db=json.dumps(f"sqlite:///{folder / 'anomon.db'}"),
        metrics_port=_free_port(),
        web_port=web_port,
        step=STEP,
        sink=json.dumps(sink),
        sources=sources,
    )
    path = folder / "anomon.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _history(config_path: Path, out: Print) -> None:
    """A day of normal data at STEP seconds, stored as the sources would have, then
    scored once with no receivers; its incidents are resolved before the live part."""
    config = load_config(config_path)
    engine = store.open_engine(config.database.url)
    store.ensure_schema(engine, migrate=True)
    now = int(time.time()) // STEP * STEP
    times = np.arange(now - HISTORY, now, STEP)
    registry, points = store.SeriesRegistry(), 0
    sources = {source.name: source for source in config.sources}
    for model in MODELS:
        samples = []
        scrape = sources[model]
        assert isinstance(scrape, PrometheusScrapeSourceConfig)
        labels = {"model": model, **target_labels(scrape)}  # as the live scrapes label them
        for metric in METRICS:
            info = SeriesInfo(model, f"{model}-model", KINDS.get(metric.name, SeriesKind.CUSTOM))
            key = SeriesKey.of(metric.name, labels)
            series = values(model, metric, times)
            samples += [
                Sample(key, info, int(t), float(v)) for t, v in zip(times, series, strict=True)
            ]
        moment = datetime.now(UTC)
        result = store.save_collection(
            engine, registry, source=model, started_at=moment, finished_at=moment, samples=samples
        )
        points += result.points
    began = time.monotonic()
    DetectJob(engine, config.detection, alerts=AlertsConfig())()  # no receivers: no one told
    took = time.monotonic() - began
    found = store.list_anomalies(engine, since=0, limit=1_000_000)
    incidents = store.list_incidents(engine, everything=True, limit=1000)
    moment = datetime.now(UTC)
    for row in incidents:  # closed, so the live daemon never tells of one it never opened
        if row.status == IncidentStatus.FIRING:
            version = store.incident_detail(engine, row.id, anomaly_limit=0).version
            store.resolve_by_hand(engine, row.id, version=version, outbox=(), now=moment)
    engine.dispose()
    out(
        f"  history       {HISTORY // 3600} h at {STEP} s: {points:,} points stored and scored "
        f"in {took:.1f} s; {len(found)} anomalies, {len(incidents)} incident(s) "
        "in this normal data (told to no one, closed before the live part)"
    )


def _start_daemon(config_path: Path, folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = folder / "anomon.log"
    log = log_path.open("ab")
    env = {**os.environ, "ANOMON_CONFIG": str(config_path)}
    env.pop("ANOMON_DATABASE_URL", None)  # the demo's database, whatever the shell says
    daemon = subprocess.Popen(
        [sys.executable, "-m", "anomon", "run", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # the terminal's SIGHUP would reload it: the demo stops it
    )
    log.close()
    return daemon, log_path


@dataclass
class _Live:
    """The live part: the credit model's log written as time goes, and what happens
    printed as it happens."""

    daemon: subprocess.Popen[bytes]
    scenario: Scenario
    credit: PredictionLog
    received: queue.Queue[Delivery]
    start: float
    until: float
    retrained: list[str] = field(default_factory=list)  # the retraining command's lines

    def watch(self, out: Print) -> list[Delivery]:
        """Print injections, notifications and retraining runs until ``until`` (or the
        daemon stops); return the notifications."""
        out("live:")
        shown: set[tuple[str, str]] = set()
        deliveries: list[Delivery] = []
        edges = [(i.name, edge, at) for i in self.scenario.incidents for edge, at in
                 (("starts", i.start), ("ends", i.end))]  # fmt: skip
        edges.append(("model drift", "starts", self.credit.drift_at))
        while time.time() < self.until and self.daemon.poll() is None:
            now = time.time()
            self.credit.advance(now)
            for name, edge, at in edges:
                if at <= now and at < self.until and (name, edge) not in shown:
                    shown.add((name, edge))
                    out(f"  {_clock(at - self.start)}  {name} {edge}")
            self._retraining(out)
            try:
                delivery = self.received.get(timeout=0.5)
            except queue.Empty:
                continue
            deliveries.append(delivery)
            out(f"  {_clock(delivery.at - self.start)}  webhook: {_summary(delivery)}")
        self._retraining(out)
        return deliveries

    def _retraining(self, out: Print) -> None:
        path = self.credit.log.parent / RETRAIN_LOG
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        for line in lines[len(self.retrained) :]:
            at, _, what = line.partition(" ")
            out(f"  {_clock(float(at) - self.start)}  retrain command: {what}")
        self.retrained = lines


@contextmanager
def _interrupted_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the demo as Ctrl-C does (the daemon is stopped after)."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _kill(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _stop(daemon: subprocess.Popen[bytes], log_path: Path, out: Print) -> int:
    if daemon.poll() is not None:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-10:]
        out(f"the daemon stopped by itself (exit {daemon.returncode}); its log ends:")
        for line in tail:
            out(f"  {line}")
        return 1
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        out("the daemon did not stop within 30 s of SIGTERM: killed")
        return 1
    return 0 if daemon.returncode == 0 else 1


def _findings(
    config_path: Path,
    scenario: Scenario,
    deliveries: list[Delivery],
    start: float,
    out: Print,
) -> None:
    config = load_config(config_path)
    engine = store.open_engine(config.database.url)
    incidents = [
        row
        for row in store.list_incidents(engine, everything=True, limit=1000)
        if row.opened_at.timestamp() >= start
    ]
    anomalies = store.list_anomalies(engine, since=int(start), limit=100_000)
    engine.dispose()
    out("findings:")
    for line in _fault_findings(scenario, incidents, anomalies, deliveries, time.time()):
        out(line)


def _fault_findings(
    scenario: Scenario,
    incidents: list[IncidentRecord],
    anomalies: list[store.AnomalyRow],
    deliveries: list[Delivery],
    now: float,
) -> list[str]:
    """When each injected fault was found: its series' first anomaly in an incident of
    its model (an entity's faults are one incident: a leak that starts while the model's
    accuracy incident fires is found in that incident, as one of its series), and the
    incidents of the HTTP models that no fault explains."""
    lines: list[str] = []
    by_id = {row.id: row for row in incidents}
    claimed: set[int] = set()
    for injected in scenario.incidents:
        if injected.start >= now:
            lines.append(f"  {injected.name}: not injected (the demo ended first)")
            continue
        entity = f"{injected.model}-model"
        found = sorted(
            (row.ts, row.incident_id)
            for row in anomalies
            if row.metric == injected.metric
            and row.entity == entity
            and row.incident_id in by_id
            and row.ts >= injected.start - STEP
        )
        if not found:
            lines.append(f"  {injected.name}: not detected")
            continue
        at, incident_id = found[0]
        first = by_id[incident_id]
        claimed.update(number for _, number in found)
        delay = at - injected.start
        told = [d.at for d in deliveries if first.id in _incident_ids(d)]
        notice = ""
        if told and told[-1] >= at:
            notice = f", webhook {min(t for t in told if t >= at) - at:.0f} s later"
        elif told:  # it joined an incident told of before
            notice = ", its incident told of already"
        ending = "still firing" if first.status == IncidentStatus.FIRING else "resolved"
        if first.resolved_at is not None and injected.end < now:
            ending = f"resolved {first.resolved_at.timestamp() - injected.end:.0f} s after it ended"
        joined = "" if first.metric == injected.metric else f", opened for {first.metric}"
        lines.append(
            f"  {injected.name}: detected {max(delay, 0):.0f} s after it began{notice} "
            f"(incident #{first.id}{joined}, {first.severity}, peak {first.peak_score:.0f}, "
            f"{ending})"
        )
    # the credit model's own are told of below
    others = [row for row in incidents if row.id not in claimed and row.entity != f"{MODEL}-model"]
    lines.append(f"  other incidents during the live part: {len(others)}")
    lines.extend(
        f"    #{row.id} {row.metric} on {row.entity}, peak {row.peak_score:.0f}, {row.status}"
        for row in others
    )
    events: dict[str, int] = {}
    for delivery in deliveries:
        event = str(delivery.body.get("event", "?"))
        events[event] = events.get(event, 0) + 1
    summary = ", ".join(f"{n} {event}" for event, n in sorted(events.items()))
    lines.append(
        f"  notifications received: {len(deliveries)}" + (f" ({summary})" if summary else "")
    )
    return lines


def _drift_findings(
    credit: PredictionLog, deliveries: list[Delivery], retrained: list[str], out: Print
) -> None:
    """When the credit model's drift was told: from its scores alone (estimates and
    drift, before labels), from its labels, and when its retraining started."""
    if credit.drift_at >= time.time():
        out("  model drift: not injected (the demo ended first)")
        return
    told: dict[str, tuple[float, dict[str, Any]]] = {}  # scores / labels -> first notice
    # the first moment each stage can show the drift: its scores at once, its labels
    # once the first drifted prediction's label has landed; a notice before that is
    # about something else (noise), not the drift
    visible = {"scores": credit.drift_at, "labels": credit.drift_at + LABEL_LAG}
    early: list[str] = []
    for delivery in deliveries:
        if delivery.body.get("event") != "firing":
            continue
        for incident in delivery.body.get("incidents", []):
            if incident.get("entity") != f"{MODEL}-model":
                continue
            stage = "scores" if incident.get("metric") in BEFORE_LABELS else "labels"
            if delivery.at < visible[stage]:
                early.append(
                    f"  {MODEL} model, before its drift could show in its {stage}: "
                    f"{incident.get('metric')} fired (incident #{incident.get('id')}, "
                    f"{_clock(delivery.at - credit.drift_at)} from the drift): not the drift"
                )
                continue
            told.setdefault(stage, (delivery.at, incident))
    for line in early:
        out(line)
    for stage, what in (("scores", "from its scores alone"), ("labels", "from its labels")):
        if stage not in told:
            out(f"  model drift {what}: not told yet")
            continue
        at, incident = told[stage]
        shown = [
            f"{c.get('metric')} {_number(c.get('value'), 3)} "
            f"(expected {_number(c.get('expected'), 3)})"
            for c in incident.get("contributors", [])
            if c.get("metric") in ("estimated_accuracy", "accuracy")
        ]
        out(
            f"  model drift {what}: told {at - credit.drift_at:.0f} s after it began "
            f"(incident #{incident.get('id')}, {incident.get('metric')}"
            + (f"; {', '.join(shown)}" if shown else "")
            + ")"
        )
    if retrained:
        first = float(retrained[0].partition(" ")[0])
        out(
            f"  retraining command ran {len(retrained)} time(s), the first "
            f"{first - credit.drift_at:.0f} s after the drift began"
        )
    else:
        out("  retraining command: not run")


def _incident_ids(delivery: Delivery) -> set[int]:
    return {int(i["id"]) for i in delivery.body.get("incidents", []) if "id" in i}


def _summary(delivery: Delivery) -> str:
    body = delivery.body
    shown = [
        f"{i.get('metric')}{{model={i.get('labels', {}).get('model', '?')}}} "
        f"{i.get('severity')} peak {_number(i.get('peak_score'))}"
        for i in body.get("incidents", [])
    ]
    return f"{body.get('event', '?'):<8} " + "; ".join(shown)


def _number(value: object, digits: int = 0) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "?"


def _describe(incident: Incident, start: float) -> str:
    effect = {
        "ramp": f"+{incident.size:g} per minute",
        "shift": f"{incident.size:+g}",
        "scale": f"x{incident.size:g}",
    }[incident.effect]
    until = f" until {_clock(incident.end - start)}" if math.isfinite(incident.end) else ""
    return f"{incident.name:<14} {incident.model} {incident.metric:<24} {effect}{until}"


def _clock(offset: float) -> str:
    sign = "-" if offset < 0 else "+"
    whole = int(abs(offset))
    return f"{sign}{whole // 60}:{whole % 60:02d}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
