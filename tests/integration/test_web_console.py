"""The web console's pages and their JSON twins (issue 16), on both databases, through
Flask's test client: what they show, the filters and pages, escaping of names that come
from outside, the charts, authentication, and the refusal to listen off loopback without
it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from flask.testing import FlaskClient

from anomon import store
from anomon.config import Config, DetectionConfig, SamplesConfig, parse_config
from anomon.errors import ConfigError
from anomon.model import DeployRecord, Sample, SeriesInfo, SeriesKey, SeriesKind
from anomon.service.detection import DetectJob
from anomon.web.app import create_app

START = 1_700_000_000 - 1_700_000_000 % 86_400
NOW = datetime.fromtimestamp(START + 60 * 900, UTC)
HOSTILE = '<script>alert("x")</script>'
DETECTION = DetectionConfig.model_validate({"forest": {"min_train": 200}, "seasonality": []})


def seed_hosts(
    engine: store.Engine, *, start: int, hostile: str, now: datetime, detect: bool = True
) -> None:
    """Two hosts' cpu, 900 minutes from ``start``, jumping in the last 40 (one host named
    by ``hostile``): two incidents, scored as of ``now`` (unless not ``detect``)."""
    rng = np.random.default_rng(3)
    samples = []
    for host in ("db-1", hostile):
        values = 40 + rng.normal(0, 1, 900)
        values[860:] += 30
        info = SeriesInfo("node", host, SeriesKind.RESOURCE, "")
        key = SeriesKey.of("cpu", {"host": host})
        samples += [Sample(key, info, start + 60 * i, float(values[i])) for i in range(900)]
    store.save_collection(
        engine, store.SeriesRegistry(), source="node", started_at=now, finished_at=now,
        samples=samples,
    )  # fmt: skip
    if not detect:
        return
    DetectJob(engine, DETECTION, clock=lambda: now,
              samples=SamplesConfig(max_ahead=timedelta(days=1)))()  # fmt: skip


def _seed(engine: store.Engine) -> None:
    seed_hosts(engine, start=START, hostile=HOSTILE, now=NOW)


def _client(engine: store.Engine, **web: object) -> FlaskClient:
    config = Config.model_validate({"web": web})
    return create_app(config, engine, clock=lambda: NOW).test_client()


def test_the_overview_and_incident_pages_show_what_detection_found_escaped(
    engine: store.Engine,
) -> None:
    _seed(engine)
    client = _client(engine)
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Firing incidents: 2" in html
    assert HOSTILE not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "script-src" not in page.headers["Content-Security-Policy"]  # none allowed at all
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    overview = client.get("/overview.json").get_json()
    assert overview["firing_count"] == 2 and overview["detection"]["points"] == 1800
    assert sum(overview["firing_by_severity"].values()) == 2
    assert {i["entity"] for i in overview["firing"]} == {"db-1", HOSTILE}  # JSON: as it is
    (shown,) = [i for i in overview["firing"] if i["entity"] == "db-1"]
    detail = client.get(f"/incidents/{shown['id']}.json").get_json()
    assert detail["status"] == "firing" and detail["timeline"][0]["what"] == "opened"
    (contributor,) = detail["contributors"]
    assert contributor["series"] == 'cpu{"host":"db-1"}' and contributor["value"] > 60
    assert detail["anomaly_count"] >= len(detail["anomalies"]) > 0
    html = client.get(f"/incidents/{shown['id']}").get_data(as_text=True)
    assert f"Incident {shown['id']}" in html and detail["charts"][0]["url"] in html
    chart = client.get(detail["charts"][0]["url"])
    assert chart.status_code == 200 and chart.mimetype == "image/svg+xml"
    svg = chart.get_data(as_text=True)
    assert svg.startswith("<?xml") and "<script" not in svg
    assert client.get("/incidents/999999").status_code == 404
    assert client.get(f"/incidents/{2**70}").status_code == 404
    assert client.get(f"/series/{2**70}/chart.svg").status_code == 404
    assert client.get("/incidents/999999.json").status_code == 404


def test_the_incident_list_filters_and_pages_newest_first(engine: store.Engine) -> None:
    _seed(engine)
    client = _client(engine, page_size=1)
    first = client.get("/incidents.json").get_json()
    (newest,) = first["incidents"]
    assert first["next"] is not None
    second = client.get(first["next"].replace("/incidents?", "/incidents.json?")).get_json()
    (older,) = second["incidents"]
    assert older["id"] < newest["id"] and second["next"] is None
    wanted = client.get("/incidents.json?entity=db-1&status=firing&since=1d").get_json()
    assert [i["entity"] for i in wanted["incidents"]] == ["db-1"]
    assert client.get("/incidents.json?status=resolved").get_json()["incidents"] == []
    assert (
        client.get("/incidents.json?severity=warning&metric=memory").get_json()["incidents"] == []
    )
    assert client.get("/incidents?status=bogus").status_code == 404
    assert client.get("/incidents?since=soon").status_code == 404
    assert client.get(f"/incidents?before={2**70}").status_code == 404
    html = client.get("/incidents?entity=%3Cb%3E").get_data(as_text=True)
    assert 'value="&lt;b&gt;"' in html  # the filter as typed, escaped


def test_a_password_or_a_token_is_asked_for_when_configured(engine: store.Engine) -> None:
    client = _client(engine, password="s3cret-pass", token="t0ken-for-scripts")
    refused = client.get("/")
    assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
    good = base64.b64encode(b"anomon:s3cret-pass").decode()
    assert client.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    bad = base64.b64encode(b"anomon:wrong").decode()
    assert client.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    other = base64.b64encode(b"root:s3cret-pass").decode()
    assert client.get("/", headers={"Authorization": f"Basic {other}"}).status_code == 401
    token = {"Authorization": "Bearer t0ken-for-scripts"}
    assert client.get("/overview.json", headers=token).status_code == 200
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/overview.json", headers=wrong).status_code == 401
    assert client.get("/static/console.css").status_code == 401  # everything is behind it


def test_listening_off_loopback_needs_a_password_or_token() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"web": {"listen": "0.0.0.0:9465"}})
    assert any("web" in p and "reachable from other hosts" in p for p in caught.value.problems)
    with pytest.raises(ConfigError) as caught:
        parse_config({"daemon": {"metrics_listen": "0.0.0.0:9464"}})
    assert any("beside metrics_listen it would be 0.0.0.0:9465" in p
               for p in caught.value.problems)  # fmt: skip
    fine = parse_config({"web": {"listen": "0.0.0.0:9465", "password": "x"}})
    assert fine.web.address(fine.daemon) == "0.0.0.0:9465"
    assert Config().web.address(Config().daemon) == "127.0.0.1:9465"


def _token(client: FlaskClient, path: str) -> str:
    """The CSRF token a page's forms carry (the browser session's)."""
    html = client.get(path).get_data(as_text=True)
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def _firing(client: FlaskClient, entity: str) -> int:
    found = client.get(f"/incidents.json?status=firing&entity={entity}").get_json()
    return int(found["incidents"][0]["id"])


def test_acknowledge_resolve_and_feedback_are_forms_protected_from_forgery(
    engine: store.Engine,
) -> None:
    _seed(engine)
    client = _client(engine)
    incident = _firing(client, "db-1")
    page = f"/incidents/{incident}"
    token = _token(client, page)
    # no token, a wrong one, or another site's page: refused, nothing changes
    assert client.post(f"{page}/ack").status_code == 403
    assert client.post(f"{page}/ack", data={"csrf": "forged"}).status_code == 403
    evil = {"Origin": "https://evil.example"}
    assert client.post(f"{page}/ack", data={"csrf": token}, headers=evil).status_code == 403
    assert client.get(f"{page}.json").get_json()["acknowledged_at"] is None
    done = client.post(f"{page}/ack", data={"csrf": token}, headers={"Origin": "http://localhost"})
    assert done.status_code == 303 and done.headers["Location"].endswith(page)
    shown = client.get(page).get_data(as_text=True)
    assert "acknowledged: it is no longer repeated" in shown  # told once, on the page
    assert client.get(f"{page}.json").get_json()["acknowledged_at"] is not None
    told = client.post(f"{page}/feedback", data={"csrf": token, "verdict": "false_alarm"})
    assert told.status_code == 303
    assert client.get(f"{page}.json").get_json()["feedback"] == "false_alarm"
    assert client.post(f"{page}/resolve", data={"csrf": token}).status_code == 303
    assert client.get(f"{page}.json").get_json()["status"] == "resolved"
    again = client.post(f"{page}/resolve", data={"csrf": token}, follow_redirects=True)
    assert "is resolved, not firing" in again.get_data(as_text=True)


def test_a_page_of_another_site_rebound_to_loopback_gets_nothing(engine: store.Engine) -> None:
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 sends
    its own Host. A console without credentials answers only its own addresses (and the
    external_url a reverse proxy serves it at), so it cannot read a page or get a form's
    token, let alone silence every incident."""
    _seed(engine)
    config = Config.model_validate({"daemon": {"external_url": "https://anomon.example/"}})
    client = create_app(config, engine, clock=lambda: NOW).test_client()
    for host in ("evil.example:9465", "127.0.0.1.evil.example", "[::2]:9465", "a:b:c"):
        refused = client.get("/silences", headers={"Host": host})
        assert refused.status_code == 421, host
        assert "csrf" not in refused.get_data(as_text=True)
    for host in ("127.0.0.1:9465", "localhost", "[::1]:9465", "127.0.0.2", "anomon.example"):
        assert client.get("/silences", headers={"Host": host}).status_code == 200, host
    # behind a reverse proxy that sends on Host 127.0.0.1: the browser's Origin is the
    # external_url's, and its forms are accepted
    incident = _firing(client, "db-1")
    page = f"/incidents/{incident}"
    html = client.get(page, headers={"Host": "127.0.0.1:9465"}).get_data(as_text=True)
    marker = 'name="csrf" value="'
    token = html[html.index(marker) + len(marker) :].split('"', 1)[0]
    proxied = {"Host": "127.0.0.1:9465", "Origin": "https://anomon.example"}
    done = client.post(f"{page}/ack", data={"csrf": token}, headers=proxied)
    assert done.status_code == 303
    other = {"Host": "127.0.0.1:9465", "Origin": "http://anomon.example"}  # not its scheme
    assert client.post(f"{page}/resolve", data={"csrf": token}, headers=other).status_code == 403
    assert client.get(f"{page}.json").get_json()["status"] == "firing"
    # a token that is no ASCII text is a wrong token (a TypeError, 500, before)
    wrong = {"csrf": "é"}
    assert client.post(f"{page}/resolve", data=wrong, headers=proxied).status_code == 403


def test_silence_like_this_is_prefilled_previewed_created_and_expired(
    engine: store.Engine,
) -> None:
    _seed(engine)
    client = _client(engine)
    incident = _firing(client, "db-1")
    form = client.get(f"/silences?incident={incident}").get_data(as_text=True)
    assert "entity=db-1\nhost=db-1\nkind=resource\nmetric=cpu\nsource=node</textarea>" in form
    assert f'<a href="/incidents/{incident}">{incident}</a> cpu on db-1' in form  # covered now
    preview = client.get("/silences?matchers=entity%3D~db.%2A%0Ametric%3Dcpu").get_data(
        as_text=True
    )
    assert f'<a href="/incidents/{incident}">' in preview
    token = _token(client, "/silences")
    bad = client.post("/silences", data={"csrf": token, "matchers": "entity=~(", "for": "2h"})
    assert bad.status_code == 400 and "not a valid regular expression" in bad.get_data(as_text=True)
    made = client.post(
        "/silences",
        data={"csrf": token, "matchers": "entity=db-1\nmetric=cpu", "for": "3h",
              "comment": "<b>maintenance</b>"},
    )  # fmt: skip
    assert made.status_code == 303
    listed = client.get("/silences.json").get_json()["silences"]
    assert [(s["matchers"], s["comment"], s["created_by"]) for s in listed] == [
        ("entity=db-1 metric=cpu", "<b>maintenance</b>", "console")]  # fmt: skip
    assert "&lt;b&gt;maintenance&lt;/b&gt;" in client.get("/silences").get_data(as_text=True)
    assert datetime.fromisoformat(listed[0]["ends_at"]) - NOW == timedelta(hours=3)
    expire = f"/silences/{listed[0]['id']}/expire"
    assert client.post(expire, data={"csrf": token}).status_code == 303
    assert client.get("/silences.json").get_json()["silences"] == []
    assert len(client.get("/silences.json?all=1").get_json()["silences"]) == 1


def test_a_script_acts_with_its_token_and_a_read_only_console_acts_not_at_all(
    engine: store.Engine,
) -> None:
    _seed(engine)
    client = _client(engine, token="t0ken-for-scripts")
    token = {"Authorization": "Bearer t0ken-for-scripts"}
    incident = int(
        client.get("/incidents.json?entity=db-1", headers=token).get_json()["incidents"][0]["id"]
    )
    acked = client.post(f"/incidents/{incident}/ack", headers=token)  # no cookie: no CSRF
    assert acked.status_code == 200 and acked.get_json()["ok"] is True
    made = client.post("/silences", headers=token, data={"matchers": "entity=db-1", "for": "1h"})
    assert made.get_json()["id"] >= 1
    watching = _client(engine, read_only=True)
    html = watching.get(f"/incidents/{incident}").get_data(as_text=True)
    assert "Acknowledge" not in html and "Resolve" not in html and '<form method="post"' not in html
    assert watching.post(f"/incidents/{incident}/resolve").status_code == 403
    assert watching.get(f"/incidents/{incident}.json").get_json()["status"] == "firing"


def test_the_series_explorer_finds_series_and_draws_a_range_with_deploys(
    engine: store.Engine,
) -> None:
    _seed(engine)
    store.record_deploys(
        engine, [DeployRecord(NOW - timedelta(hours=2), "", "release-9", entity="db-1")], now=NOW
    )
    client = _client(engine)
    found = client.get("/series.json?metric=cp*&labels=host%3Ddb-1").get_json()
    (series,) = found["series"]
    assert (series["name"], series["entity"], series["quality"]) == (
        'cpu{"host":"db-1"}', "db-1", "ok")  # fmt: skip
    assert series["value"] > 60 and series["expected"] < 45 and series["score"] >= 80
    assert client.get("/series.json?metric=memory").get_json()["series"] == []
    assert client.get("/series.json?entity=db-1").get_json()["series"] == [series]
    page = client.get(f"/series/{series['id']}.json?range=7d").get_json()
    assert page["range"] == "7d" and page["chart"].endswith("range=7d")
    assert [i["entity"] for i in page["incidents"]] == ["db-1"]
    html = client.get(f"/series/{series['id']}?range=6h").get_data(as_text=True)
    assert '<a href="/series/' in html and "<strong>6h</strong>" in html
    assert client.get(f"/series/{series['id']}?range=2y").status_code == 404
    drawn = client.get(f"/series/{series['id']}/chart.svg?range=6h")
    assert drawn.status_code == 200 and drawn.mimetype == "image/svg+xml"
    bare = client.get(f"/series/{series['id']}/chart.svg?range=6h&incident=x")
    assert len(drawn.get_data()) > 0 and bare.status_code == 200
    assert client.get("/series/999999").status_code == 404
    hostile = client.get("/series?metric=%3Cscript%3E").get_data(as_text=True)
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile
    # an incident that opened soon after a deploy of its entity names it on its page
    store.record_deploys(
        engine, [DeployRecord(NOW - timedelta(minutes=50), "", "release-10", entity="db-1")],
        now=NOW,
    )  # fmt: skip
    incident = page["incidents"][0]["id"]
    shown = client.get(f"/incidents/{incident}.json").get_json()["deploy"]
    assert shown.startswith("db-1 release-10 at ") and "min before it opened" in shown
    assert "release-10" in client.get(f"/incidents/{incident}").get_data(as_text=True)


def test_the_overview_says_how_long_a_source_has_been_failing(engine: store.Engine) -> None:
    registry = store.SeriesRegistry()
    for minute, error in enumerate([None, "HTTP 503", None, "HTTP 503", "HTTP 503", "timeout"]):
        at = NOW + timedelta(minutes=minute)
        store.save_collection(engine, registry, source="scrape", started_at=at, finished_at=at,
                              samples=[], error=error)  # fmt: skip
    store.save_collection(engine, registry, source="fine", started_at=NOW, finished_at=NOW,
                          samples=[])  # fmt: skip
    client = _client(engine)
    sources = {s["source"]: s for s in client.get("/overview.json").get_json()["sources"]}
    assert sources["scrape"]["failures"] == 3 and sources["scrape"]["last_error"] == "timeout"
    assert sources["fine"]["failures"] == 0
    html = client.get("/").get_data(as_text=True)
    assert "3 failures in a row: tried less and less often" in html
