"""Delivery benchmark: 10,000 queued notifications to a fast local webhook receiver.

A receiver in its own process on 127.0.0.1 (asyncio, keep-alive) answers every POST
with 200 at once. The
outbox holds 10,000 firing notifications, each its own incident and group (the worst
case: one HTTP request each). The delivery job drains it in batches (claim, render,
send, record); the benchmark prints deliveries per second and the outbox's own cost
per notification -- the time not spent inside the HTTP send (claiming, reading the
incidents, building notices, recording outcomes). Target: the database is never the
bottleneck, >= 1,000 deliveries/s with a fast receiver. Last line: one JSON object with
``deliveries_per_s`` and ``outbox_overhead_ms``.

    python benchmarks/notify.py [--notifications 10000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from anomon import store
from anomon.alerts.model import Notice, Notifier
from anomon.alerts.notifiers import build_notifiers
from anomon.config import AlertsConfig
from anomon.model import IncidentWrite, OutboxEntry
from anomon.service.delivery import DeliverJob

RECEIVER = """
import asyncio

REPLY = b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n"


class Receiver(asyncio.Protocol):
    # a fast receiver: reads each request (headers, then Content-Length bytes of body)
    # and answers 200 on the same keep-alive connection

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\\r\\n\\r\\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\\r\\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.transport.write(REPLY)


async def main():
    server = await asyncio.get_running_loop().create_server(Receiver, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
"""


class Timed:
    """A notifier that counts the time spent inside ``send``."""

    def __init__(self, inner: Notifier) -> None:
        self.name, self._inner, self.seconds, self.sent = inner.name, inner, 0.0, 0

    def send(self, notice: Notice) -> None:
        start = time.perf_counter()
        self._inner.send(notice)
        self.seconds += time.perf_counter() - start
        self.sent += 1

    def close(self) -> None:
        self._inner.close()


def queue(engine: store.Engine, count: int, now: datetime) -> None:
    """Store ``count`` firing incidents, each with one pending notification."""
    writes = [
        IncidentWrite(
            series_id=None,
            entity=f"model-{i % 50}",
            metric="accuracy",
            labels=json.dumps({"metric": "accuracy", "entity": f"model-{i % 50}", "n": str(i)}),
            status="firing",
            severity="warning",
            peak_score=91.0,
            opened_at=now,
            last_seen_at=now,
            outbox=(OutboxEntry("hook", f'default:{{"n":"{i}"}}', "firing", f"bench-{i}", now),),
        )
        for i in range(count)
    ]
    with engine.begin() as conn:
        store.write_incidents(conn, writes, now=now)


def run(url: str, count: int, port: int, concurrency: int = 1) -> tuple[float, float]:
    """Drain ``count`` notifications; return (deliveries per second, overhead ms each)."""
    engine = store.open_engine(url)
    store.upgrade(engine)
    now = datetime.now(UTC)
    queue(engine, count, now)
    config = AlertsConfig.model_validate(
        {
            "receiver": "hook",
            "receivers": [{"name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{port}/"}],
            "delivery": {"concurrency": concurrency},
        }
    )
    timed = Timed(build_notifiers(config)["hook"])
    job = DeliverJob(engine, config, {"hook": timed}, clock=lambda: now)
    start = time.perf_counter()
    for _ in range(count):  # bounded: each pass sends up to batch_size
        if not job.run_once().sent:
            break
    took = time.perf_counter() - start
    counts = store.outbox_counts(engine)
    timed.close()
    engine.dispose()
    if counts.get("sent") != count or timed.sent != count:
        raise SystemExit(f"expected {count} sent, got {counts} ({timed.sent} sends)")
    overhead_ms = (took - timed.seconds) / count * 1000
    print(
        f"{store.redact(url).split(':')[0]}: {count:,} notifications in {took:.2f} s "
        f"-> {count / took:,.0f} deliveries/s; HTTP sends {timed.seconds:.2f} s, "
        f"outbox overhead {overhead_ms:.3f} ms per notification"
    )
    return count / took, overhead_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument("--database-url", help="also run on this PostgreSQL database")
    parser.add_argument("--concurrency", type=int, default=1, help="[alerts.delivery]")
    args = parser.parse_args()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            rate, overhead = run(
                f"sqlite:///{Path(tmp) / 'bench.db'}", args.notifications, port, args.concurrency
            )
        if args.database_url:
            run(args.database_url, args.notifications, port, args.concurrency)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    print(json.dumps({"deliveries_per_s": round(rate), "outbox_overhead_ms": round(overhead, 3)}))


if __name__ == "__main__":
    main()
