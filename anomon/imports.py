"""Libraries that take seconds to import, imported where they are first needed.

scikit-learn (with the scipy.stats and pandas it pulls in) takes about 4 s to import on
a small machine: loaded at start, it delayed every ``anomon run`` (and every command
that loads detection) even when nothing was fitted. Its users import it through
:func:`scikit_learn`, one thread at a time: the daemon's jobs run in threads, and two of
them importing different parts of scikit-learn at once can each hold a module the other
needs (Python then raises a deadlock error in one of them).
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

_LOCK = threading.Lock()


def scikit_learn(module: str) -> ModuleType:
    """Return ``sklearn.<module>``, importing it on first use."""
    with _LOCK:
        return importlib.import_module(f"sklearn.{module}")
