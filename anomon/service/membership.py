"""Several workers on one PostgreSQL: who is alive, and who does what.

Each ``anomon run`` is a row of the ``workers`` table whose heartbeat it renews every
``[daemon] heartbeat`` (15 s): that is its lease, and a worker whose heartbeat is older
than :data:`LEASE_BEATS` heartbeats (a minute) is gone. At every heartbeat each worker
reads the live ones and splits the work among them by rendezvous (highest-random-weight)
hashing: each source, and each entity, goes to the live worker with the highest hash of
(worker id, name), so a worker that joins or leaves moves only its own share. An entity
is split as its alarm unit (entity, model, version — the scope of one incident): the
entities of one unit that come from several sources stay with one worker. The jobs
that must run once — retention, the absent-data watch, planning repeat notifications —
run on the owner of the key ``leader``.

A worker that dies is seen gone once its lease has run out; the others then take its
share, and their detection rebuilds the state of the entities it gets from the store
(watermarks, scored rows, firing incidents) exactly as a restart does. A worker that
joins takes its share at once and the previous owners let it go at their next
heartbeat, so for up to one heartbeat two workers may run the same share: every write
is idempotent (samples and anomalies by unique keys, incidents by conditional updates,
notifications claimed with ``FOR UPDATE SKIP LOCKED``).

On SQLite one daemon holds the writer lock: it is alone and owns everything.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence

LEASE_BEATS = 4  # heartbeats a worker may miss before the others take its share
LEADER = "leader"  # the key whose owner runs the jobs that must run once


def weight(worker: int, key: str) -> int:
    """The rendezvous weight of ``worker`` for ``key`` (a stable 64-bit hash)."""
    digest = hashlib.blake2b(f"{worker}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, workers: Sequence[int]) -> int:
    """The worker of ``workers`` that owns ``key``: the highest weight (ties: the
    highest id)."""
    return max(workers, key=lambda worker: (weight(worker, key), worker))


def source_key(name: str) -> str:
    return f"source:{name}"


def entity_key_text(key: Iterable[str]) -> str:
    return "entity:" + "\x1f".join(key)


class Membership:
    """This worker's view of the live workers, and what it owns among them.

    ``worker`` None: alone (SQLite, or no ``workers`` row): it owns everything. Safe to
    call from every job's thread; :meth:`update` comes from the heartbeat.
    """

    def __init__(self, worker: int | None, workers: Iterable[int] = ()) -> None:
        self.worker = worker
        self._lock = threading.Lock()
        self._workers: tuple[int, ...] = ()
        self._owned: dict[str, bool] = {}
        self.update(workers)

    @property
    def workers(self) -> tuple[int, ...]:
        """The live workers, this one among them."""
        return self._workers

    def update(self, workers: Iterable[int]) -> bool:
        """Take the live workers read at a heartbeat; return whether they changed."""
        found = set(workers)
        if self.worker is not None:
            found.add(self.worker)  # it is alive: it is asking
        fresh = tuple(sorted(found))
        with self._lock:
            if fresh == self._workers:
                return False
            self._workers, self._owned = fresh, {}
            return True

    def owns(self, key: str) -> bool:
        """Whether this worker runs ``key`` (a source or an entity, as text)."""
        if self.worker is None or len(self._workers) <= 1:
            return True
        with self._lock:
            found = self._owned.get(key)
            if found is None:
                found = self._owned[key] = owner(key, self._workers) == self.worker
            return found

    def leads(self) -> bool:
        """Whether this worker runs the jobs that must run once."""
        return self.owns(LEADER)

    def share(self, keys: Sequence[str]) -> float:
        """The fraction of ``keys`` this worker owns (1 when there are none)."""
        if not keys:
            return 1.0
        return sum(self.owns(key) for key in keys) / len(keys)
