"""The retention job: delete what is older than ``[retention]`` keeps, in batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from anomon import store
from anomon.config import RetentionConfig
from anomon.errors import AnomonError
from anomon.timeutil import Clock, to_epoch, utcnow

log = logging.getLogger("anomon.retention")


@dataclass
class RetainJob:
    """Delete old samples, runs, anomalies and resolved incidents; never raises."""

    engine: store.Engine
    config: RetentionConfig
    clock: Clock = field(default=utcnow)

    def __call__(self) -> None:
        try:
            deleted = self.run_once()
        except AnomonError as exc:
            log.error("retention failed: %s", exc)
            return
        except Exception:  # the scheduler must never see an exception
            log.exception("retention failed unexpectedly")
            return
        if any(deleted.values()):
            log.info(
                "retention: deleted %s",
                ", ".join(f"{n} {table}" for table, n in deleted.items() if n),
            )

    def run_once(self) -> dict[str, int]:
        """Delete one round of old rows; return how many went per table."""
        now = self.clock()
        cutoffs = store.Cutoffs(
            samples=to_epoch(now - self.config.samples),
            anomalies=to_epoch(now - self.config.anomalies),
            runs=now - self.config.runs,
            incidents=now - self.config.incidents,
        )
        # PostgreSQL: whole days first (a catalogue change each), then the rows left
        dropped = store.drop_partitions_before(self.engine, cutoffs.samples)
        store.make_partitions(self.engine, now=to_epoch(now))  # the days to come
        deleted = store.delete_old(self.engine, cutoffs, batch=self.config.batch_size)
        return {"sample_partitions": dropped, **deleted} if dropped else deleted
