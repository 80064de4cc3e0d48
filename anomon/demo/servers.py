"""The demo's two HTTP servers, both on 127.0.0.1 and an ephemeral port: the simulated
model server (``GET /metrics/<model>``) and a webhook sink that keeps what it is sent."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from anomon.demo.simulator import MODELS, Scenario, exposition


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook request the sink got: when (epoch s) and its JSON body."""

    at: float
    body: dict[str, Any]


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # the demo prints what matters

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def model_server(
    scenario: Callable[[], Scenario | None], now: Callable[[], float] = time.time
) -> Iterator[str]:
    """Serve the simulator until the block ends; yield its base URL. ``scenario`` gives
    the incidents injected at each request (None: none)."""

    class Handler(_Quiet):
        def do_GET(self) -> None:
            model = self.path.removeprefix("/metrics/")
            if model not in MODELS:
                self.reply(404, b"no such model\n", "text/plain")
                return
            text = exposition(model, now(), scenario())
            self.reply(200, text.encode(), "text/plain; version=0.0.4")

    with _serving(Handler) as url:
        yield url


@contextmanager
def webhook_sink() -> Iterator[tuple[str, queue.Queue[Delivery]]]:
    """Accept JSON POSTs until the block ends; yield (URL, queue of deliveries)."""
    received: queue.Queue[Delivery] = queue.Queue()

    class Handler(_Quiet):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                self.reply(400, b"not JSON\n", "text/plain")
                return
            received.put(Delivery(time.time(), body))
            self.reply(200, b'{"ok": true}\n', "application/json")

    with _serving(Handler) as url:
        yield f"{url}/hook", received


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
