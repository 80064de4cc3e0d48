"""The demo's third model: a credit classifier that logs its predictions, with labels
that arrive late.

Every second it makes RATE predictions, appended to a JSONL log (id, time, model,
version, predicted class, score); each one's true class lands LABEL_LAG seconds later
in a CSV of its own (id, label), joined by id — as a bank learns of a default weeks
after the decision. Its scores are calibrated: a row's true class is drawn with the
probability its score says. At the scenario's drift the inputs change and the scores
crowd towards 0.5 (still calibrated): the accuracy falls from about 0.88 to 0.69. The
estimated accuracy (CBPE, from the scores alone) sees it as soon as a window closes;
the labelled accuracy only when the labels land. Every value is a pure function of the
second (its own random stream), so history and live rows are alike.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

MODEL = "credit"
RATE = 20  # predictions per second
WINDOW = 10  # seconds per quality window
LABEL_LAG = 30  # seconds from a prediction to its label
SHAPE_NORMAL, SHAPE_DRIFT = 0.25, 2.0  # Beta(a, a) of the scores: sure of itself, unsure
HISTORY = 3600  # seconds of log written before the daemon starts

SOURCE = """
[[sources]]
name = "{model}"
kind = "predictions"
path = {log}
labels_path = {labels}
id = "id"
score = "score"
window = "{window}s"
min_labels = 50
label_delay = "{delay}s"
lookback = "2h"
interval = "{step}s"
entity = "{model}-model"
"""


class PredictionLog:
    """The credit model's prediction log and labels file in ``folder``; rows of the
    seconds from ``drift_at`` on (epoch s; infinite: never) are drawn drifted."""

    def __init__(self, folder: Path, drift_at: float = math.inf) -> None:
        self.log = folder / f"{MODEL}-predictions.jsonl"
        self.labels = folder / f"{MODEL}-labels.csv"
        self.drift_at = drift_at
        self._predicted = self._labelled = 0  # the next second to write, of each file

    def source(self, step: int) -> str:
        """The ``[[sources]]`` entry that reads the two files."""
        return SOURCE.format(
            model=MODEL,
            log=json.dumps(str(self.log)),
            labels=json.dumps(str(self.labels)),
            window=WINDOW,
            delay=2 * LABEL_LAG,
            step=step,
        )

    def start(self, now: float) -> int:
        """Write HISTORY seconds of predictions up to ``now`` and the labels due by
        then; return the rows written."""
        first = int(now) - HISTORY
        self._predicted = self._labelled = first
        self.log.write_text("", encoding="utf-8")
        self.labels.write_text("id,label\n", encoding="utf-8")
        self.advance(now)
        return HISTORY * RATE

    def advance(self, now: float) -> None:
        """Append the predictions of the seconds before ``now`` and the labels that
        are due (LABEL_LAG seconds after their prediction)."""
        until = int(now)
        if until > self._predicted:
            lines = [self._predictions(second) for second in range(self._predicted, until)]
            with self.log.open("a", encoding="utf-8") as out:
                out.write("".join(lines))
            self._predicted = until
        due = until - LABEL_LAG
        if due > self._labelled:
            lines = [self._labels_of(second) for second in range(self._labelled, due)]
            with self.labels.open("a", encoding="utf-8") as out:
                out.write("".join(lines))
            self._labelled = due

    def _draw(self, second: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([second, 7])
        shape = SHAPE_DRIFT if second >= self.drift_at else SHAPE_NORMAL
        score = np.clip(rng.beta(shape, shape, RATE), 0.001, 0.999).round(3)
        truth = rng.random(RATE) < score
        return score, truth

    def _predictions(self, second: int) -> str:
        score, _ = self._draw(second)
        return "".join(
            json.dumps(
                {
                    "id": f"{second}-{i}",
                    "ts": second,
                    "model": MODEL,
                    "version": "v1",
                    "prediction": int(s >= 0.5),
                    "score": s,
                }
            )
            + "\n"
            for i, s in enumerate(score.tolist())
        )

    def _labels_of(self, second: int) -> str:
        _, truth = self._draw(second)
        return "".join(f"{second}-{i},{int(t)}\n" for i, t in enumerate(truth.tolist()))
