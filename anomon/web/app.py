"""The console's pages: what a person on call opens from a notification.

Every page is plain HTML that reads without JavaScript (none is served: the Content
Security Policy allows no script at all), and each has a JSON twin for scripts (the same
path with ``.json``). Values come from outside (metric names, labels, errors): Jinja
escapes everything it renders, and charts are SVG images whose text is drawn as paths.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Response, abort, jsonify, render_template, request, url_for

from anomon import store
from anomon.alerts.model import deploy_text
from anomon.config import Config
from anomon.errors import AnomonError, UsageError
from anomon.model import IncidentRecord, IncidentStatus, SeriesKey, Severity, describe_key
from anomon.service.delivery import deploy_before
from anomon.timeutil import Clock, from_epoch, parse_duration, to_epoch, utcnow
from anomon.web.auth import Credentials, trusted_host

# the routing labels anomon adds to a series' own (its title shows the series' own)
ROUTING_ONLY = ("metric", "entity", "source", "kind", "severity")
# the ranges the series explorer draws (zoom by range links)
RANGES = {text: parse_duration(text) for text in ("1h", "6h", "1d", "7d", "30d")}
SERIES_SHOWN = 200  # series listed by one search
# charts on an incident's page, strongest series first: each is a request to a server of
# four threads, and an incident of 300 series (a source crossing a limit) held it minutes
CHARTS_SHOWN = 8
CHART_BEFORE = timedelta(hours=6)  # a series is drawn from this long before its incident
CHART_AFTER = timedelta(hours=1)  # ... to this long after it (or now)
HEADERS = {
    # no script of any kind, nothing from elsewhere, never in a frame
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin: no address leaves for other sites, and a form's POST still says its
    # Origin (no-referrer would make it "null", and the CSRF check refuses those)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(config: Config, engine: store.Engine, *, clock: Clock = utcnow) -> Flask:
    """The console over ``engine``, as ``config`` says (``[web]``)."""
    app = Flask("anomon.web")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    credentials = Credentials.of(config.web)
    page_size = config.web.page_size

    @app.before_request
    def _authenticate() -> Response | None:
        if not credentials.required and not trusted_host(request.host, config.daemon.external_url):
            return Response("this console answers on its own address only\n", 421)
        if not credentials.allows(request.headers.get("Authorization")):
            reply = Response("authentication required\n", 401, mimetype="text/plain")
            reply.headers["WWW-Authenticate"] = 'Basic realm="anomon", charset="UTF-8"'
            return reply
        ids = request.view_args or {}
        if any(isinstance(v, int) and v >= 2**63 for v in ids.values()):
            abort(404)  # no row has such an id (the database would refuse the number)
        return None

    @app.after_request
    def _secure(reply: Response) -> Response:
        reply.headers.update(HEADERS)
        return reply

    @app.errorhandler(AnomonError)
    def _store_failed(exc: AnomonError) -> tuple[str, int]:
        return render_template("error.html", message=str(exc)), 503

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> tuple[str, int]:
        return render_template("error.html", message="nothing here"), 404

    @app.errorhandler(403)
    def _refused(exc: Exception) -> tuple[str, int]:
        reason = getattr(exc, "description", "") or "not allowed"
        return render_template("error.html", message=reason), 403

    def twin(html: Callable[..., dict[str, Any]], name: str) -> Callable[..., Any]:
        """Serve ``html``'s data as HTML, and at ``<path>.json`` as JSON."""

        def page(**kw: Any) -> Any:
            data = html(**kw)
            if request.path.endswith(".json"):
                return jsonify(plain(data))
            return render_template(f"{name}.html", **data)

        page.__name__ = name
        return page

    def overview() -> dict[str, Any]:
        now = clock()
        found = store.read_status(engine)
        firing = store.search_incidents(engine, status=IncidentStatus.FIRING, limit=page_size)
        return {
            "now": now,
            "daemons": store.read_workers(engine, now=now),
            "detection": store.last_detection(engine),
            "sources": found.sources,
            "series": found.series_by_quality,
            "learning": found.learning,
            "outbox": found.outbox,
            "dead": found.dead,
            "firing": [_incident(i) for i in firing],
            "firing_count": found.open_incidents,
            "firing_by_severity": {
                str(level): sum(1 for i in firing if i.severity == level) for level in Severity
            },
        }

    def incidents() -> dict[str, Any]:
        status = request.args.get("status") or None
        if status not in (None, "firing", "resolved"):
            abort(404)
        since_text = request.args.get("since") or ""
        try:
            since = clock() - parse_duration(since_text) if since_text else None
            before = int(request.args["before"]) if request.args.get("before") else None
        except ValueError:
            abort(404)
        if before is not None and not 0 < before < 2**63:
            abort(404)  # no row has such an id
        filters = {
            "status": status or "",
            "severity": request.args.get("severity") or "",
            "entity": request.args.get("entity") or "",
            "metric": request.args.get("metric") or "",
            "since": since_text,
        }
        found = store.search_incidents(
            engine,
            status=IncidentStatus(status) if status else None,
            severity=filters["severity"] or None,
            entity=filters["entity"] or None,
            metric=filters["metric"] or None,
            since=since,
            before_id=before,
            limit=page_size + 1,
        )
        more = len(found) > page_size
        shown = found[:page_size]
        given: dict[str, Any] = {k: v for k, v in filters.items() if v}
        after = url_for("incidents", **given, before=shown[-1].id) if more else None
        return {"filters": filters, "incidents": [_incident(i) for i in shown], "next": after}

    def incident(incident_id: int) -> dict[str, Any]:
        try:
            detail = store.incident_detail(engine, incident_id)
        except UsageError:
            abort(404)
        facts = _incident(detail)
        found = deploy_before(engine, detail, config.alerts.deploy_window)
        deploy = None if found is None else deploy_text(found, detail.opened_at)
        return {
            **facts,
            "deploy": deploy,
            "timeline": _timeline(detail),
            "anomaly_count": detail.anomaly_count,
            "anomalies": [
                {
                    "at": from_epoch(a.ts),
                    "series": describe_key(SeriesKey.of(a.metric, a.labels), limit=200),
                    "value": a.value,
                    "expected": a.expected,
                    "score": a.score,
                    "severity": a.severity,
                }
                for a in detail.anomalies
            ],
            "charts": [
                {
                    "series": c["series"],
                    "url": url_for("chart", series_id=c["series_id"], incident=incident_id),
                }
                for c in facts["contributors"][:CHARTS_SHOWN]
            ],
            "charts_left_out": max(len(facts["contributors"]) - CHARTS_SHOWN, 0),
        }

    from anomon.web import actions

    actions.install(app, config, engine, clock)
    app.add_url_rule("/", "overview", twin(overview, "overview"))
    app.add_url_rule("/overview.json", "overview_json", twin(overview, "overview"))
    app.add_url_rule("/incidents", "incidents", twin(incidents, "incidents"))
    app.add_url_rule("/incidents.json", "incidents_json", twin(incidents, "incidents"))
    app.add_url_rule("/incidents/<int:incident_id>", "incident", twin(incident, "incident"))
    app.add_url_rule(
        "/incidents/<int:incident_id>.json", "incident_json", twin(incident, "incident")
    )

    def series_list() -> dict[str, Any]:
        filters = {
            "metric": request.args.get("metric", "").strip(),
            "entity": request.args.get("entity", "").strip(),
            "labels": request.args.get("labels", "").strip(),
        }
        wanted: dict[str, str] = {}
        for pair in filters["labels"].split():
            name, sep, value = pair.partition("=")
            if not sep or not name:
                abort(404)
            wanted[name] = value
        found = store.search_series(
            engine,
            metric=filters["metric"] or None,
            entity=filters["entity"] or None,
            labels=wanted,
            limit=SERIES_SHOWN + 1,
        )
        return {
            "filters": filters,
            "series": [_series(s) for s in found[:SERIES_SHOWN]],
            "more": len(found) > SERIES_SHOWN,
        }

    def series_page(series_id: int) -> dict[str, Any]:
        found = store.search_series(engine, series_id=series_id, limit=1)
        if not found:
            abort(404)
        shown = _series(found[0])
        span = request.args.get("range", "1d")
        if span not in RANGES:
            abort(404)
        now = clock()
        since = now - RANGES[span]
        recent = store.search_incidents(engine, entity=found[0].entity, since=since, limit=20)
        return {
            **shown,
            "range": span,
            "ranges": list(RANGES),
            "chart": url_for("chart", series_id=series_id, range=span),
            "incidents": [_incident(i) for i in recent],
        }

    app.add_url_rule("/series", "series_list", twin(series_list, "series_list"))
    app.add_url_rule("/series.json", "series_list_json", twin(series_list, "series_list"))
    app.add_url_rule("/series/<int:series_id>", "series", twin(series_page, "series"))
    app.add_url_rule("/series/<int:series_id>.json", "series_json", twin(series_page, "series"))

    @app.route("/series/<int:series_id>/chart.svg")
    def chart(series_id: int) -> Response:
        """The series around an incident (``?incident=ID``), or over ``?range=`` (1h to
        30d; the last day by default) with its incidents shaded and its deploys."""
        now = clock()
        span = RANGES.get(request.args.get("range", "1d"))
        if span is None:
            abort(404)
        start, end = now - span, now
        spans = store.incident_spans(engine, series_id, since=to_epoch(start), until=to_epoch(end))
        wanted = request.args.get("incident", "")
        if wanted.isdigit():
            try:
                shown = store.incident_detail(engine, int(wanted), anomaly_limit=0)
            except UsageError:
                abort(404)
            last = shown.resolved_at or shown.last_seen_at
            start, end = shown.opened_at - CHART_BEFORE, min(last + CHART_AFTER, now)
            spans = [(to_epoch(shown.opened_at), to_epoch(last))]
        around = store.series_around(engine, series_id, since=to_epoch(start), until=to_epoch(end))
        if not around.ts:
            abort(404)
        from anomon.alerts.chart import render_series
        from anomon.alerts.model import Points

        points = Points(around.ts, around.values, around.expected, around.anomalies)
        (about,) = store.search_series(engine, series_id=series_id, limit=1) or abort(404)
        marked = store.list_deploys(
            engine, since=start, until=end, about=(about.entity, about.labels)
        )
        deploys = [(to_epoch(d.at), d.version) for d in marked]
        image = render_series(
            points, "", spans=spans, deploys=deploys, width_px=900, height_px=260,
            image_format="svg",
        )  # fmt: skip
        return Response(image, mimetype="image/svg+xml")

    @app.template_filter("when")
    def _when(moment: datetime | None) -> str:
        return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}Z"

    @app.template_filter("number")
    def _number(value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "n/a"
        return f"{value:.4g}"

    return app


def _incident(record: IncidentRecord) -> dict[str, Any]:
    """An incident as the pages and their JSON show it."""
    labels = dict(record.labels)
    own = {k: v for k, v in labels.items() if k not in ROUTING_ONLY}
    return {
        "id": record.id,
        "status": str(record.status),
        "severity": str(record.severity),
        "metric": record.metric,
        "entity": record.entity,
        "labels": labels,
        "title": describe_key(SeriesKey.of(record.metric, own), limit=200),
        "peak_score": record.peak_score,
        "opened_at": record.opened_at,
        "last_seen_at": record.last_seen_at,
        "resolved_at": record.resolved_at,
        "acknowledged_at": record.acknowledged_at,
        "feedback": None if record.feedback is None else str(record.feedback),
        "silenced": record.silenced,
        "value": record.value,
        "expected": record.expected,
        "contributors": [
            {
                "series_id": c.series_id,
                "series": describe_key(SeriesKey.of(c.metric, c.labels), limit=200),
                "value": c.value,
                "expected": c.expected,
                "peak_score": c.peak_score,
            }
            for c in record.contributors
        ],
    }


def _series(found: store.SeriesStatus) -> dict[str, Any]:
    """A series as the explorer shows it."""
    return {
        "id": found.id,
        "name": describe_key(SeriesKey.of(found.metric, found.labels), limit=200),
        "metric": found.metric,
        "labels": found.labels,
        "entity": found.entity,
        "source": found.source,
        "unit": found.unit,
        "quality": found.quality or "not scored yet",
        "learning_until": None
        if found.learning_until is None
        else from_epoch(found.learning_until),
        "last_at": None if found.last_ts is None else from_epoch(found.last_ts),
        "value": found.last_value,
        "expected": found.last_expected,
        "score": found.last_score,
    }


def _moment(epoch: int | None) -> datetime | None:
    return None if epoch is None else from_epoch(epoch)


def _timeline(detail: store.IncidentDetail) -> list[dict[str, Any]]:
    """What happened to an incident, oldest first: opened, each notification and how it
    went, acknowledged, resolved."""
    events: list[dict[str, Any]] = [{"at": detail.opened_at, "what": "opened", "detail": ""}]
    for n in detail.notifications:
        outcome = str(n.status)
        if n.last_error:
            outcome += f": {n.last_error}"
        events.append(
            {
                "at": n.sent_at or n.created_at,
                "what": f"{n.event} notification to {n.receiver}",
                "detail": f"{outcome} after {n.attempts} attempt(s)",
            }
        )
    if detail.acknowledged_at is not None:
        events.append({"at": detail.acknowledged_at, "what": "acknowledged", "detail": ""})
    if detail.resolved_at is not None:
        events.append({"at": detail.resolved_at, "what": "resolved", "detail": ""})
    return sorted(events, key=lambda e: e["at"])


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: times as RFC 3339 text, dataclasses as objects,
    non-finite numbers as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
