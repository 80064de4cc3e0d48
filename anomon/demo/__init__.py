"""``anomon demo``: the whole loop on one machine, in a few minutes.

Starts a simulated model server (:mod:`.simulator`) and a webhook sink on 127.0.0.1,
writes a day of history into a fresh SQLite database and scores it (no alerts: it is
normal data, so whatever it finds is the false-alarm rate), then runs the real daemon
(``anomon run`` as a subprocess) against the server while the scenario injects a memory
leak, an accuracy drop and a latency spike. It prints each injection and each
notification as it happens, then what was found and how long it took.
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
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import numpy as np

from anomon import store
from anomon.config import AlertsConfig, PrometheusScrapeSourceConfig, load_config
from anomon.demo.servers import Delivery, model_server, webhook_sink
from anomon.demo.simulator import METRICS, MODELS, Incident, Scenario, values
from anomon.model import IncidentStatus, Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob
from anomon.sources.prometheus_scrape import target_labels

STEP = 5  # seconds between samples, in the history and live
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

[[alerts.receivers]]
name = "sink"
kind = "webhook"
url = {sink}
{sources}"""
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
        config_path = _write_config(folder, server, sink_url, web_port)
        paths = ",".join(MODELS)
        shape = f"{len(MODELS)} models x {len(METRICS)} metrics, noise and a daily shape"
        out(f"  model server  {server}/metrics/{{{paths}}}  ({shape})")
        out(f"  webhook sink  {sink_url}")
        out(f"  console       http://127.0.0.1:{web_port}/  (while the daemon runs)")
        _history(config_path, out)
        daemon, log_path = _start_daemon(config_path, folder)
        try:
            out(f"  daemon        pid {daemon.pid}, log {log_path}")
            start = time.time()
            live.append(Scenario.starting(start, seconds))
            scenario = live[0]
            out("schedule, from the start of the live part:")
            for incident in scenario.incidents:
                out(f"  {_clock(incident.start - start)}  {_describe(incident, start)}")
            with _interrupted_by_signals():
                deliveries = _watch(daemon, scenario, received, start, start + seconds, out)
            code = _stop(daemon, log_path, out)
        finally:  # Ctrl-C, SIGTERM, a closed pipe: never leave the daemon behind
            _kill(daemon)
    _findings(config_path, scenario, deliveries, start, out)
    out("explore what it wrote:")
    out(f"  anomon incidents list --all -c {config_path}")
    out(f"  anomon anomalies --since 2h -c {config_path}")
    out(f"  anomon plot model_accuracy --label model=churn --since 2h -c {config_path}")
    return code


def _write_config(folder: Path, server: str, sink: str, web_port: int) -> Path:
    # JSON strings are TOML basic strings: quotes and backslashes in a path stay intact
    sources = "".join(
        SOURCE.format(model=m, url=json.dumps(f"{server}/metrics/{m}"), step=STEP) for m in MODELS
    )
    text = CONFIG.format(
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


def _watch(
    daemon: subprocess.Popen[bytes],
    scenario: Scenario,
    received: queue.Queue[Delivery],
    start: float,
    until: float,
    out: Print,
) -> list[Delivery]:
    """Print injections and notifications as they happen until ``until``; return the
    notifications."""
    out("live:")
    shown: set[tuple[str, str]] = set()
    deliveries: list[Delivery] = []
    while time.time() < until and daemon.poll() is None:
        now = time.time()
        for incident in scenario.incidents:
            for edge, at in (("starts", incident.start), ("ends", incident.end)):
                if at <= now and at < until and (incident.name, edge) not in shown:
                    shown.add((incident.name, edge))
                    out(f"  {_clock(at - start)}  {incident.name} {edge}")
        try:
            delivery = received.get(timeout=0.5)
        except queue.Empty:
            continue
        deliveries.append(delivery)
        out(f"  {_clock(delivery.at - start)}  webhook: {_summary(delivery)}")
    return deliveries


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
    engine.dispose()
    out("findings:")
    claimed: set[int] = set()
    for injected in scenario.incidents:
        if injected.start >= time.time():
            out(f"  {injected.name}: not injected (the demo ended first)")
            continue
        hits = [
            row
            for row in incidents
            if row.metric == injected.metric
            and row.entity == f"{injected.model}-model"
            and row.opened_at.timestamp() >= injected.start - STEP
        ]
        if not hits:
            out(f"  {injected.name}: not detected")
            continue
        first = min(hits, key=lambda row: row.opened_at)
        claimed.update(row.id for row in hits)
        delay = first.opened_at.timestamp() - injected.start
        told = [d.at for d in deliveries if first.id in _incident_ids(d)]
        notice = f", webhook {told[0] - first.opened_at.timestamp():.0f} s later" if told else ""
        ending = "still firing" if first.status == IncidentStatus.FIRING else "resolved"
        if first.resolved_at is not None and injected.end < time.time():
            ending = f"resolved {first.resolved_at.timestamp() - injected.end:.0f} s after it ended"
        out(
            f"  {injected.name}: detected {max(delay, 0):.0f} s after it began{notice} "
            f"(incident #{first.id}, {first.severity}, peak {first.peak_score:.0f}, {ending})"
        )
    others = [row for row in incidents if row.id not in claimed]
    out(f"  other incidents during the live part: {len(others)}")
    for row in others:
        out(f"    #{row.id} {row.metric} on {row.entity}, peak {row.peak_score:.0f}, {row.status}")
    events: dict[str, int] = {}
    for delivery in deliveries:
        event = str(delivery.body.get("event", "?"))
        events[event] = events.get(event, 0) + 1
    summary = ", ".join(f"{n} {event}" for event, n in sorted(events.items()))
    out(f"  notifications received: {len(deliveries)}" + (f" ({summary})" if summary else ""))


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


def _number(value: object) -> str:
    return f"{value:.0f}" if isinstance(value, int | float) else "?"


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
