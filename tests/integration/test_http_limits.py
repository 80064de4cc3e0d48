"""The limits of every HTTP source kind against hostile servers on 127.0.0.1 (issue 11).

A peer that trickles its answer one byte at a time, a redirect, a gzip bomb, a page of
hundreds of thousands of series, numbers no float can hold: each is refused by name,
within the source's ``timeout`` and in bounded memory, and what is good is kept.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from anomon.config import (
    HttpJsonSourceConfig,
    PrometheusQuerySourceConfig,
    PrometheusScrapeSourceConfig,
)
from anomon.errors import SourceError
from anomon.sources import (
    HttpJsonSource,
    PartialCollection,
    PrometheusQuerySource,
    PrometheusScrapeSource,
)
from anomon.sources.http import HttpSource

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
Route = Callable[[BaseHTTPRequestHandler], None]
ROUTES: dict[str, Route] = {}


def answer(
    status: int, body: bytes, headers: dict[str, str] | None = None, delay: float = 0.0
) -> Route:
    """A route that waits ``delay`` s, then answers ``status`` with ``body``."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def trickle(head: bytes, body: bytes, *, every: float = 0.25) -> Route:
    """A route that sends ``head`` at once, then ``body`` one byte each ``every`` s (at
    most 80 bytes: bounded even if the client never gives up)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(head)
        for byte in body[:80]:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)

    return route


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        # the client may give up (a time limit): nothing more to send then
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            ROUTES[self.path.split("?")[0]](self)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


OPEN: list[HttpSource[Any]] = []


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def http_json(url: str, **options: object) -> HttpJsonSource:
    config = HttpJsonSourceConfig.model_validate(
        {"name": "j", "kind": "http_json", "url": url, "fields": {"good": "good"}, **options}
    )
    OPEN.append(made := HttpJsonSource(config))
    return made


def scrape(url: str, **options: object) -> PrometheusScrapeSource:
    config = PrometheusScrapeSourceConfig.model_validate(
        {"name": "s", "kind": "prometheus_scrape", "url": url, **options}
    )
    OPEN.append(made := PrometheusScrapeSource(config))
    return made


def query(url: str, **options: object) -> PrometheusQuerySource:
    config = PrometheusQuerySourceConfig.model_validate(
        {"name": "q", "kind": "prometheus_query", "url": url, **options}
    )
    OPEN.append(made := PrometheusQuerySource(config))
    return made


def failure(source: HttpSource[Any]) -> tuple[str, float]:
    """Run a collection that must fail; return its message and how long it took."""
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        source.collect(NOW)  # type: ignore[attr-defined]
    return str(caught.value), time.monotonic() - started


# --- point 4: `timeout` is a deadline for the whole collection -------------------------


@pytest.mark.parametrize("make", [http_json, scrape])
def test_a_trickled_body_times_out_at_the_deadline(server: str, make: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    ROUTES["/trickle-body"] = trickle(head, b'{"good": 1' + b" " * 900 + b"}")
    message, took = failure(make(f"{server}/trickle-body", timeout="2s"))
    assert "timed out after 2 s" in message
    assert took < 3.0  # each read came within 0.25 s: httpx alone never timed out


def test_trickled_headers_time_out_at_the_deadline(server: str) -> None:
    ROUTES["/trickle-head"] = trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 70)
    message, took = failure(http_json(f"{server}/trickle-head", timeout="1s"))
    assert "timed out after 1 s" in message
    assert took < 2.0


def test_a_peer_that_stalls_after_a_byte_is_cut_at_the_deadline(server: str) -> None:
    # one byte at 0.9 s, then silence: httpx's read timeout would wait until 1.9 s
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    ROUTES["/stall"] = _after(0.9, trickle(head, b"{" + b" " * 9, every=5.0))
    message, took = failure(http_json(f"{server}/stall", timeout="1s"))
    assert "timed out after 1 s" in message
    assert took < 1.6


def _after(delay: float, route: Route) -> Route:
    def delayed(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        route(handler)

    return delayed


def test_the_queries_of_one_collection_share_the_deadline(server: str) -> None:
    vector = {"status": "success", "data": {"resultType": "vector", "result": []}}
    vector["data"]["result"] = [{"metric": {}, "value": [1.0, "2.5"]}]  # type: ignore[index]
    ROUTES["/api/v1/query"] = answer(200, json.dumps(vector).encode(), delay=0.7)
    queries = {f"q{i}": "up" for i in range(5)}
    source = query(server, timeout="2s", queries=queries)
    started = time.monotonic()
    with pytest.raises(PartialCollection) as caught:
        source.collect(NOW)
    assert time.monotonic() - started < 2.8  # five queries of 0.7 s each: 3.5 s
    assert "timed out after 2 s" in str(caught.value)
    assert {s.key.metric for s in caught.value.samples} == {"q0", "q1"}


# --- point 12: redirects are errors, named -------------------------------------------


@pytest.mark.parametrize("make", [http_json, scrape, query])
def test_a_redirect_is_an_error_naming_its_target_without_secrets(server: str, make: Any) -> None:
    target = "http://user:S3CRET@127.0.0.1:1/moved/metrics?token=QTOKEN"
    ROUTES["/redirected"] = answer(302, b"", {"Location": target})
    ROUTES["/api/v1/query"] = answer(302, b"", {"Location": target})
    options = {"queries": {"a": "up"}} if make is query else {}
    url = f"{server}/redirected" if make is not query else server
    message, _ = failure(make(url, **options))
    assert "HTTP 302 redirect to http://127.0.0.1:1/moved/metrics" in message
    assert "does not follow redirects" in message
    assert "S3CRET" not in message and "QTOKEN" not in message


def test_a_relative_redirect_is_named_by_its_full_address(server: str) -> None:
    ROUTES["/relative"] = answer(301, b"", {"Location": "/elsewhere?token=QTOKEN"})
    message, _ = failure(http_json(f"{server}/relative"))
    assert f"HTTP 301 redirect to {server}/elsewhere —" in message
    assert "QTOKEN" not in message


# --- point 14: decompressed bytes are capped while streaming ---------------------------


def _bomb(megabytes: int) -> bytes:
    """A gzip stream of ``megabytes`` MB of zeros (about a thousandth of that on the wire),
    made without holding the plain text."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(megabytes)) + packer.flush()


@pytest.mark.parametrize("make", [http_json, scrape])
def test_a_gzip_bomb_is_refused_in_bounded_memory(server: str, make: Any) -> None:
    ROUTES["/bomb"] = answer(200, _bomb(64), {"Content-Encoding": "gzip"})
    source = make(f"{server}/bomb", max_bytes=1_000_000)
    tracemalloc.start()
    try:
        message, took = failure(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "response larger than 1000000 bytes" in message
    assert peak < 4 * 1_000_000  # httpx decoded the whole 64 kB chunk: 64 MB at once
    assert took < 2.0


def test_compressed_bodies_are_read(server: str) -> None:
    body = json.dumps({"good": 4.5}).encode()
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    ROUTES["/gzip"] = answer(200, gzip.compress(body), {"Content-Encoding": "gzip"})
    ROUTES["/deflate"] = answer(200, zlib.compress(body), {"Content-Encoding": "deflate"})
    ROUTES["/raw"] = answer(
        200, raw_deflate.compress(body) + raw_deflate.flush(), {"Content-Encoding": "deflate"}
    )
    for path in ("/gzip", "/deflate", "/raw"):
        assert [s.value for s in http_json(f"{server}{path}").collect(NOW)] == [4.5]
    ROUTES["/br"] = answer(200, body, {"Content-Encoding": "br"})
    assert "unsupported Content-Encoding br" in failure(http_json(f"{server}/br"))[0]
    ROUTES["/corrupt"] = answer(200, b"not gzip at all", {"Content-Encoding": "gzip"})
    assert "body is not valid gzip" in failure(http_json(f"{server}/corrupt"))[0]


# --- point 14: a page past the cardinality guard is not parsed -------------------------


def test_a_page_past_the_guard_stops_parsing_and_keeps_what_was_read(server: str) -> None:
    page = "# TYPE wide gauge\n" + "".join(f'wide{{id="{i}"}} {i}\n' for i in range(200_000))
    ROUTES["/wide"] = answer(200, page.encode())
    source = scrape(f"{server}/wide", max_series=1000)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(PartialCollection) as caught:
            source.collect(NOW)
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "stopped reading the page after 1000 series (max_series=1000)" in str(caught.value)
    assert len(caught.value.samples) == 1000
    assert peak < 4 * len(page)  # the body and its text; all parsed was ~250 MB
    assert took < 3.0  # all parsed took ~4 s


def test_unwanted_metrics_do_not_count_against_the_guard(server: str) -> None:
    noise = "".join(f'noise{{id="{i}"}} 1\n' for i in range(5000))
    picked = "".join(f'wanted{{gpu="{i % 2}",n="{i}"}} {i}\n' for i in range(20))
    ROUTES["/mixed"] = answer(200, (noise + picked).encode())
    kept = scrape(
        f"{server}/mixed", max_series=10, metrics=["want*"], match_labels={"gpu": "1"}
    ).collect(NOW)
    assert sorted(s.value for s in kept) == [float(i) for i in range(1, 20, 2)]


def test_histogram_buckets_count_a_quarter_of_a_series(server: str) -> None:
    page = "# TYPE lat histogram\n" + "".join(
        f'lat_bucket{{le="{b}"}} {b}\n' for b in (0.1, 0.2, 0.5, 1, 2, 5, 10, "+Inf")
    )
    ROUTES["/histogram"] = answer(200, (page + "lat_sum 3\nlat_count 10\n").encode())
    source = scrape(f"{server}/histogram", max_series=4, rates=False)
    got = {s.key.metric for s in source.collect(NOW)}  # 2 + 8 / 4 = 4 series: all read
    assert got == {"lat_p50", "lat_p90", "lat_p99", "lat_average"}


# --- point 11: a number no float can hold is refused, the rest kept -------------------


@pytest.mark.parametrize("digits", [400, 5000])
def test_a_huge_json_number_is_refused_and_the_other_fields_kept(server: str, digits: int) -> None:
    body = f'{{"good": 1.5, "big": {"9" * digits}, "neg": -{"9" * digits}, "e": 1e999}}'
    ROUTES["/numbers"] = answer(200, body.encode())
    fields = {"good": "good", "big": "big", "neg": "neg", "e": "e"}
    with pytest.raises(PartialCollection) as caught:
        http_json(f"{server}/numbers", fields=fields).collect(NOW)
    message = str(caught.value)
    assert f"big: not a finite number: 999999999999… ({digits} characters)" in message
    assert "neg: not a finite number" in message and "e: not a finite number: 1e999" in message
    assert [(s.key.metric, s.value) for s in caught.value.samples] == [("good", 1.5)]


def test_a_huge_json_timestamp_is_refused_by_name(server: str) -> None:
    ROUTES["/stamped"] = answer(200, f'{{"good": 1, "t": {"1" * 400}}}'.encode())
    message, _ = failure(http_json(f"{server}/stamped", timestamp="t"))
    assert "timestamp: t: not a finite number: 111111111111… (400 characters)" in message


@pytest.mark.parametrize("digits", [400, 5000])
def test_a_huge_exposition_number_is_refused_and_the_rest_kept(server: str, digits: int) -> None:
    page = (
        f"good 2\nbig {'9' * digits}\nstamped 1 {'1' * digits}\n"
        f'# TYPE lat histogram\nlat_bucket{{le="abc"}} 1\nalso_good 3\n'
    )
    ROUTES["/exposition"] = answer(200, page.encode())
    with pytest.raises(PartialCollection) as caught:
        scrape(f"{server}/exposition", rates=False).collect(NOW)
    message = str(caught.value)
    assert f"big: not a representable number ({digits} characters)" in message
    assert f"stamped: not a representable number ({digits} characters)" in message
    assert "lat: could not convert string to float: 'abc'" in message
    assert {s.key.metric: s.value for s in caught.value.samples} == {
        "good": 2.0,
        "also_good": 3.0,
    }


def test_a_huge_number_in_a_query_answer_is_refused_and_the_rest_kept(server: str) -> None:
    def vector(value: str, at: str = "1.5") -> bytes:
        return (
            '{"status":"success","data":{"resultType":"vector","result":'
            f'[{{"metric":{{}},"value":[{at},{value}]}}]}}}}'
        ).encode()

    answers = {"good": vector('"2.5"'), "big": vector("9" * 5000), "late": vector('"1"', "1" * 400)}
    ROUTES["/api/v1/query"] = lambda handler: answer(
        200, answers[handler.path.split("query=")[1].split("&")[0]]
    )(handler)
    queries = {"good": "good", "big": "big", "late": "late"}
    with pytest.raises(PartialCollection) as caught:
        query(server, queries=queries).collect(NOW)
    message = str(caught.value)
    assert "big: not a finite number: 999999999999… (5000 characters)" in message
    assert "late: not a representable time: 111111111111… (400 characters)" in message
    assert [(s.key.metric, s.value) for s in caught.value.samples] == [("good", 2.5)]
