"""The http_json source against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from anomon.config import HttpJsonSourceConfig, parse_config
from anomon.errors import ConfigError, SourceError
from anomon.sources import HttpJsonSource, PartialCollection

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
STATS = {
    "latency": {"p99": 0.25},
    "metrics": [{"value": 0.93}],
    "requests": "1200",
    "time": "2026-11-22T11:59:30Z",
    "time_ms": 1_795_348_770_250,  # 2026-11-22T11:59:30.25Z in milliseconds
    "bad": None,
    "inf": "inf",
}


# a top-level array, as TensorBoard's and MLflow's APIs answer
ARRAY = [
    {"name": "loss", "value": 0.31, "step": 1},
    {"name": "accuracy", "value": 0.88, "step": 1},
    {"name": "accuracy", "value": 0.91, "step": 2},
]


class Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, bytes, float]]] = {}
    seen_headers: ClassVar[list[dict[str, str]]] = []
    posted: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_GET(self) -> None:
        status, body, delay = self.routes[self.path.split("?")[0]]
        Handler.seen_headers.append(dict(self.headers))
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        try:
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test): nothing to answer

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        Handler.posted.append((dict(self.headers), self.rfile.read(size)))
        self.do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.routes = {
        "/stats": (200, json.dumps(STATS).encode(), 0.0),
        "/slow": (200, b"{}", 3.0),
        "/error": (500, b"oops", 0.0),
        "/denied": (401, b"{}", 0.0),
        "/garbage": (200, b"<html>not json", 0.0),
        "/huge": (200, b"[" + b"1," * 10_000 + b"1]", 0.0),
        "/array": (200, json.dumps(ARRAY).encode(), 0.0),
    }
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


OPEN: list[HttpJsonSource] = []


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    """Close every source a test made (their HTTP connections)."""
    yield
    while OPEN:
        OPEN.pop().close()


def source(url: str, **options: object) -> HttpJsonSource:
    config = HttpJsonSourceConfig.model_validate(
        {
            "name": "model",
            "kind": "http_json",
            "url": url,
            "timeout": "1s",
            "fields": {"latency_p99": "latency.p99", "accuracy": "metrics[0].value"},
            "labels": {"model": "churn", "version": "7"},
            **options,
        }
    )
    made = HttpJsonSource(config)
    OPEN.append(made)
    return made


def test_it_picks_fields_by_path_into_labelled_series(server: str) -> None:
    samples = source(f"{server}/stats", series_kind="quality").collect(NOW)
    got = {(s.key.metric, s.key.labels): s.value for s in samples}
    labels = '{"model":"churn","version":"7"}'
    assert got == {("latency_p99", labels): 0.25, ("accuracy", labels): 0.93}
    assert {s.ts for s in samples} == {int(NOW.timestamp())}
    assert {(s.info.entity, s.info.kind) for s in samples} == {("model", "quality")}


def test_it_takes_the_timestamp_from_the_payload_when_told(server: str) -> None:
    samples = source(f"{server}/stats", timestamp="time").collect(NOW)
    assert {s.ts for s in samples} == {int(NOW.timestamp()) - 30}


def test_a_millisecond_timestamp_is_not_the_year_58900(server: str) -> None:
    samples = source(f"{server}/stats", timestamp="time_ms").collect(NOW)
    assert {s.ts for s in samples} == {int(NOW.timestamp()) - 30}


def test_it_sends_headers_and_the_bearer_token(server: str) -> None:
    source(f"{server}/stats", headers={"X-Team": "ml"}, bearer_token="s3cret").collect(NOW)
    sent = Handler.seen_headers[-1]
    assert sent["X-Team"] == "ml"
    assert sent["Authorization"] == "Bearer s3cret"


def test_unreadable_fields_are_named_and_the_rest_is_kept(server: str) -> None:
    fields = {
        "latency_p99": "latency.p99",
        "gone": "latency.p50",
        "none": "bad",
        "infinite": "inf",
        "requests": "requests",
        "missing": "metrics[3].value",
    }
    with pytest.raises(PartialCollection) as caught:
        source(f"{server}/stats", fields=fields).collect(NOW)
    message = str(caught.value)
    for part in (
        "latency.p50: no field 'p50'",
        "bad: not a number: null",
        "inf: not a finite number",
        "metrics[3].value: no element [3]",
    ):
        assert part in message
    assert {s.key.metric: s.value for s in caught.value.samples} == {
        "latency_p99": 0.25,
        "requests": 1200.0,
    }


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/slow", "timed out after 1 s"),
        ("/error", "HTTP 500"),
        ("/denied", "HTTP 401"),
        ("/garbage", "invalid JSON"),
        ("/huge", "response larger than 1024 bytes"),
    ],
)
def test_a_failed_fetch_is_one_readable_line_without_secrets(
    server: str, path: str, reason: str
) -> None:
    secret_url = server.replace("http://", "http://user:hunter2@") + path + "?token=abc"
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        source(secret_url, bearer_token="s3cret", max_bytes=1024).collect(NOW)
    message = str(caught.value)
    assert reason in message and "\n" not in message
    assert not any(secret in message for secret in ("hunter2", "s3cret", "token=abc"))
    assert time.monotonic() - started < 2.5  # the timeout is honoured


def test_connection_refused_is_a_source_error(server: str) -> None:
    with pytest.raises(SourceError, match="connection refused"):
        source("http://127.0.0.1:9/stats").collect(NOW)


def test_arrays_negative_indexes_and_selection_by_key(server: str) -> None:
    # issue 14, point 6: top-level arrays, [-1], select-by-key
    fields = {
        "first_loss": "[0].value",
        "last_value": "[-1].value",
        "accuracy": "[name=accuracy].value",  # the first match
        "at_step_2": "[step=2].value",  # a number compared as JSON writes it
    }
    samples = source(f"{server}/array", fields=fields).collect(NOW)
    got = {s.key.metric: s.value for s in samples}
    assert got == {"first_loss": 0.31, "last_value": 0.91, "accuracy": 0.88, "at_step_2": 0.91}
    with pytest.raises(SourceError, match=r"\[name=f1\]\.value: no element with name=f1"):
        source(f"{server}/array", fields={"f1": "[name=f1].value"}).collect(NOW)
    with pytest.raises(SourceError, match=r"\[-4\]: no element \[-4\]"):
        source(f"{server}/array", fields={"x": "[-4]"}).collect(NOW)


def test_it_posts_a_json_body_when_told(server: str) -> None:
    Handler.posted.clear()
    query = {"experiment_ids": ["1"], "max_results": 1}
    made = source(f"{server}/array", method="POST", body=query, fields={"acc": "[1].value"})
    assert [s.value for s in made.collect(NOW)] == [0.88]
    ((headers, body),) = Handler.posted
    assert json.loads(body) == query
    assert headers["Content-Type"] == "application/json"


def test_bad_config_is_refused_with_the_field_named() -> None:
    source = {"name": "m", "kind": "http_json", "url": "http://x", "fields": {"p99": "a..b"}}
    with pytest.raises(ConfigError, match=r"sources\[0\]\.fields\.p99: expected a field path"):
        parse_config({"sources": [source]})
    with pytest.raises(ConfigError, match='a body is sent only with method = "POST"'):
        parse_config({"sources": [{**source, "fields": {"p": "p"}, "body": {"q": 1}}]})
