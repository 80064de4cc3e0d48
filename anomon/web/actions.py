"""What people do from the console: acknowledge, resolve and judge an incident, and
silence incidents like one — plain HTML forms that POST, each protected from requests
forged by other sites, and the silences page.

A browser's form carries the session's CSRF token (a random value kept in the signed,
``SameSite=Strict``, ``HttpOnly`` session cookie) and must come from the console's own
origin; a script authenticated by its bearer token sends no cookie and needs neither.
With ``[web] read_only`` the forms are not shown and every POST is refused.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from anomon import service, store
from anomon.alerts.routing import matches, parse_matcher
from anomon.config import Config
from anomon.errors import UsageError
from anomon.model import IncidentStatus
from anomon.timeutil import Clock, format_duration, parse_duration

DEFAULT_SILENCE = timedelta(hours=2)
LONGEST_SILENCE = timedelta(days=90)
SILENCED_NOT = ("severity",)  # a silence like an incident covers it whatever its severity


def csrf_token() -> str:
    """This browser session's token for forms (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def install(app: Flask, config: Config, engine: store.Engine, clock: Clock) -> None:
    """Add the actions and the silences pages to the console ``app``."""
    app.secret_key = secrets.token_bytes(32)  # sessions last as long as this daemon
    app.config.update(
        SESSION_COOKIE_NAME="anomon_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=config.daemon.external_url.startswith("https://"),
    )
    read_only = config.web.read_only
    external_url = config.daemon.external_url
    app.jinja_env.globals.update(csrf_token=csrf_token, read_only=read_only)
    pages = Blueprint("actions", __name__)

    @app.before_request
    def _guard() -> None:
        if request.method != "POST":
            return
        if read_only:
            abort(403, "this console is read-only")
        if _bearer():
            return  # a script: no cookie was sent, nothing could be forged
        given = request.form.get("csrf", "")
        kept = str(session.get("csrf", ""))
        same = hmac.compare_digest(given.encode(), kept.encode())  # text of any kind
        if not (kept and same) or not _same_origin(external_url):
            abort(403, "this form is stale or came from another site: open the page again")

    def done(message: str, target: str, **facts: Any) -> Response:
        """A script gets JSON; a browser goes back to the page (303), told what happened."""
        if _bearer():
            return jsonify({"ok": True, "message": message, **facts})
        flash(message)
        return redirect(target, code=303)

    def failed(message: str, target: str) -> Response:
        if _bearer():
            reply = jsonify({"ok": False, "error": message})
            reply.status_code = 409
            return reply
        flash(message, "error")
        return redirect(target, code=303)

    @pages.post("/incidents/<int:incident_id>/ack")
    def acknowledge(incident_id: int) -> Response:
        page = url_for("incident", incident_id=incident_id)
        try:
            store.acknowledge(engine, incident_id, now=clock())
        except UsageError as exc:
            return failed(str(exc), page)
        return done(f"incident {incident_id} acknowledged: it is no longer repeated", page)

    @pages.post("/incidents/<int:incident_id>/resolve")
    def resolve(incident_id: int) -> Response:
        page = url_for("incident", incident_id=incident_id)
        try:
            service.resolve_incident(engine, config.alerts, incident_id, now=clock())
        except UsageError as exc:
            return failed(str(exc), page)
        return done(
            f"incident {incident_id} resolved; it opens again if the series stays anomalous",
            page,
        )

    @pages.post("/incidents/<int:incident_id>/feedback")
    def feedback(incident_id: int) -> Response:
        page = url_for("incident", incident_id=incident_id)
        verdict = request.form.get("verdict", "")
        try:
            store.give_feedback(engine, incident_id, verdict)
        except UsageError as exc:
            return failed(str(exc), page)
        return done(f"incident {incident_id}: feedback {verdict} stored", page)

    def silence_form(**given: Any) -> dict[str, Any]:
        """The new-silence form's fields, and the firing incidents they cover now."""
        text = given.get("matchers") or request.args.get("matchers", "")
        span = given.get("span") or request.args.get("for", "") or format_duration(DEFAULT_SILENCE)
        comment = given.get("comment") or request.args.get("comment", "")
        incident_id = request.args.get("incident", "")
        if not text and incident_id.isdigit():
            text = _like(engine, int(incident_id))
        problems: list[str] = []
        parsed = _matchers(text, problems)
        covered = _covered(engine, parsed) if parsed and not problems else []
        return {
            "matchers": text,
            "span": span,
            "comment": comment,
            "problems": problems,
            "covered": covered,
        }

    def listed(everything: bool) -> list[dict[str, Any]]:
        """The active silences (with ``everything``, the expired too), newest first."""
        now = clock()
        return [
            {
                "id": row.id,
                "matchers": " ".join(f"{m['name']}{m['op']}{m['value']}" for m in row.matchers),
                "starts_at": row.starts_at,
                "ends_at": row.ends_at,
                "active": row.starts_at <= now < row.ends_at,
                "comment": row.comment,
                "created_by": row.created_by,
            }
            for row in reversed(store.list_silences(engine, now=now, expired=everything))
        ]

    @pages.get("/silences")
    @pages.get("/silences.json", endpoint="silences_json")
    def silences() -> Any:
        everything = request.args.get("all") == "1"
        shown = listed(everything)
        if request.path.endswith(".json"):
            from anomon.web.app import plain

            return jsonify(plain({"silences": shown}))
        return render_template(
            "silences.html", silences=shown, everything=everything, form=silence_form()
        )

    @pages.post("/silences")
    def add_silence() -> Any:
        text = request.form.get("matchers", "")
        span_text = request.form.get("for", "").strip() or format_duration(DEFAULT_SILENCE)
        comment = request.form.get("comment", "").strip()
        problems: list[str] = []
        parsed = _matchers(text, problems)
        if not parsed and not problems:
            problems.append("give at least one matcher, such as entity=churn-model")
        try:
            span = parse_duration(span_text)
            if not timedelta(0) < span <= LONGEST_SILENCE:
                problems.append(f"for: from 1s to {format_duration(LONGEST_SILENCE)}")
        except ValueError as exc:
            problems.append(f"for: {exc}")
            span = DEFAULT_SILENCE
        if problems:
            if _bearer():
                reply = jsonify({"ok": False, "error": "; ".join(problems)})
                reply.status_code = 400
                return reply
            form = silence_form(matchers=text, span=span_text, comment=comment)
            form["problems"] = problems
            page = render_template(
                "silences.html", silences=listed(False), everything=False, form=form
            )
            return page, 400
        now = clock()
        silence_id = store.add_silence(
            engine, parsed, starts_at=now, ends_at=now + span, comment=comment,
            created_by=_who(config), now=now,
        )  # fmt: skip
        return done(
            f"silence {silence_id} until {now + span:%Y-%m-%d %H:%M:%S}Z",
            url_for("actions.silences"),
            id=silence_id,
        )

    @pages.post("/silences/<int:silence_id>/expire")
    def expire(silence_id: int) -> Response:
        page = url_for("actions.silences")
        try:
            store.expire_silence(engine, silence_id, now=clock())
        except UsageError as exc:
            return failed(str(exc), page)
        return done(f"silence {silence_id} expired", page)

    app.register_blueprint(pages)


def _bearer() -> bool:
    """Whether the request authenticates with a bearer token (a script, not a browser)."""
    return request.headers.get("Authorization", "").lower().startswith("bearer ")


def _same_origin(external_url: str) -> bool:
    """Whether a browser's POST comes from the console's own pages (``Origin``, else
    ``Referer``, names the host it was sent to, or the ``external_url`` a reverse proxy
    serves it at, whatever ``Host`` the proxy sends on; a request naming neither passes
    on its token alone)."""
    claimed = request.headers.get("Origin") or request.headers.get("Referer")
    if not claimed or claimed == "null":
        return claimed is None
    origin = urlsplit(claimed)
    if origin.netloc == request.host:
        return True
    served = urlsplit(external_url) if external_url else None
    return served is not None and (origin.scheme, origin.netloc) == (served.scheme, served.netloc)


def _who(config: Config) -> str:
    """Who acts, for the record: the basic-auth user, else the console."""
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username:
        return str(auth.username)
    return "console"


def _matchers(text: str, problems: list[str]) -> list[dict[str, str]]:
    """One matcher per line (``label=value`` or ``label=~regex``); problems named."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            found.append(parse_matcher(line.strip()))
        except ValueError as exc:
            problems.append(str(exc))
    return found


def _like(engine: store.Engine, incident_id: int) -> str:
    """The matchers of a silence like incident ``incident_id``: its routing labels but
    severity, one per line."""
    try:
        found = store.incident_detail(engine, incident_id, anomaly_limit=0)
    except UsageError:
        abort(404)
    return "\n".join(
        f"{name}={value}"
        for name, value in sorted(found.labels.items())
        if name not in SILENCED_NOT and value
    )


def _covered(engine: store.Engine, matchers: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The firing incidents ``matchers`` cover now (the preview of a new silence)."""
    exact = {m["name"]: m["value"] for m in matchers if m["op"] == "="}
    regex = {m["name"]: m["value"] for m in matchers if m["op"] == "=~"}
    firing = store.search_incidents(engine, status=IncidentStatus.FIRING, limit=500)
    return [
        {"id": i.id, "metric": i.metric, "entity": i.entity, "severity": str(i.severity)}
        for i in firing
        if matches(i.labels, exact, regex)
    ]
