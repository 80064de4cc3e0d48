"""Run a program for each notification: the retraining / rollback hook.

``kind = "command"`` receivers run ``command`` (a program and its arguments, no shell)
once per notification. The program gets:

- on stdin, the notification as anomon's webhook JSON (``version``, ``key``, ``event``,
  ``status``, ``incidents`` with one incident: see :mod:`anomon.alerts.webhook`);
- an environment of its own: ``PATH``, ``HOME``, ``LANG`` and ``LC_ALL`` as anomon has
  them, the variables named in ``inherit_env``, and ``ANOMON_RECEIVER``, ``ANOMON_EVENT``
  (firing, resolved, repeat), ``ANOMON_INCIDENT_ID``, ``ANOMON_METRIC``,
  ``ANOMON_ENTITY`` and ``ANOMON_NOTIFICATION_KEY`` (stable: the same notification
  has the same key, so a program can tell one it has already acted on). Nothing else
  of anomon's environment: its database and SMTP passwords stay with it.

Exit status 0 is delivered; any other status, or running past ``timeout`` (the program
and every process it started are killed), is a failure retried like a webhook's; a
program that cannot be started at all is dead at once. The last
:data:`OUTPUT_LIMIT` characters of what it printed (stdout and stderr together) are
kept in the notification's row (``output``), success or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping

from anomon.alerts.model import Notice
from anomon.alerts.webhook import anomon_payload
from anomon.config import CommandReceiverConfig
from anomon.errors import DeliveryError
from anomon.model import escape_controls

OUTPUT_LIMIT = 4000  # characters of a run's output kept in its notification row
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL")  # always passed on (when anomon has them)
REAP_SECONDS = 5.0  # how long a killed program's output is waited for


class CommandNotifier:
    """Run one configured program per notice (see the module docstring)."""

    def __init__(
        self, config: CommandReceiverConfig, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self.name = config.name
        self._config = config
        self._environ = os.environ if environ is None else environ
        self._seconds = config.timeout.total_seconds()

    def send(self, notice: Notice) -> str:
        """Run the program on ``notice``; return what it printed (its tail). Raises
        DeliveryError (with that tail in ``output``) if it fails or runs too long."""
        body = json.dumps(anomon_payload(notice), ensure_ascii=False).encode()
        argv = list(self._config.command)
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self._config.working_dir,
                env=self._env(notice),
                start_new_session=True,  # its own process group: a timeout ends it all
            )
        except OSError as exc:  # not found, not executable, a bad working_dir
            raise DeliveryError(
                f"{self.name}: cannot run {argv[0]}: {exc.strerror or exc}", permanent=True
            ) from None
        try:
            printed, _ = process.communicate(body, timeout=self._seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            printed = _after_kill(process)
            raise DeliveryError(
                f"{self.name}: {argv[0]} ran past its timeout of {self._seconds:g} s and "
                "was killed",
                timed_out=True,
                output=tail(printed),
            ) from None
        output = tail(printed)
        if process.returncode != 0:
            last = output.strip().splitlines()[-1:] or ["no output"]
            raise DeliveryError(
                f"{self.name}: {argv[0]} exited with {_status(process.returncode)}: "
                f"{last[0][:200]}",
                output=output,
            )
        return output

    def close(self) -> None:
        """Nothing to release: each run is its own process."""

    def _env(self, notice: Notice) -> dict[str, str]:
        names = (*KEPT_ENV, *self._config.inherit_env)
        env = {name: self._environ[name] for name in names if name in self._environ}
        first = notice.incidents[0] if notice.incidents else None
        env |= {
            "ANOMON_RECEIVER": self.name,
            "ANOMON_EVENT": str(notice.event),
            "ANOMON_NOTIFICATION_KEY": notice.key,
            "ANOMON_INCIDENT_ID": str(first.id) if first else "",
            "ANOMON_METRIC": first.metric if first else "",
            "ANOMON_ENTITY": first.entity if first else "",
        }
        return env


def tail(printed: bytes | None) -> str:
    """The last OUTPUT_LIMIT characters of a program's output, as safe text (invalid
    UTF-8 replaced, control characters other than line breaks escaped)."""
    text = (printed or b"").decode("utf-8", errors="replace")[-OUTPUT_LIMIT:]
    return "\n".join(escape_controls(line) for line in text.split("\n"))


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def _after_kill(process: subprocess.Popen[bytes]) -> bytes:
    """What a killed program printed; nothing if a process it detached (a new session
    of its own, out of reach of the kill) still holds its output open."""
    try:
        printed, _ = process.communicate(timeout=REAP_SECONDS)
    except subprocess.TimeoutExpired:
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        process.wait()  # the program itself is dead: reaped at once
        return b""
    return printed or b""


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program and whatever it started (its session's process group)."""
    with contextlib.suppress(ProcessLookupError):  # it has just exited by itself
        os.killpg(process.pid, signal.SIGKILL)
