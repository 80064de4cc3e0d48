"""The exception tree of anomon.

Every error anomon raises on purpose derives from :class:`AnomonError`; only the CLI
turns them into messages and exit codes, and only the daemon's jobs catch broadly.

::

    AnomonError
    ├── ConfigError        the config file is unreadable or invalid (exit 2)
    ├── UsageError         a command asked for something the config does not have (exit 2)
    ├── DataError          an input file (replay / evaluate) is unreadable or malformed (exit 2)
    ├── StoreError         the database cannot be reached or written (exit 1)
    │   └── SchemaError    the schema is missing, behind or ahead of this anomon
    ├── SourceError        one collection failed; recorded, retried next cycle
    └── DeliveryError      a notification could not be sent; ``permanent`` says whether
                           retrying can help

Messages name the thing, what was expected and what arrived, and never carry secrets.
"""

from __future__ import annotations

from collections.abc import Sequence


def summarise(problems: Sequence[str], shown: int = 5) -> str:
    """Join the first ``shown`` problems into one line and count the rest."""
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


class AnomonError(Exception):
    """Base class of every error anomon raises on purpose."""

    exit_code = 1


class ConfigError(AnomonError):
    """The config file cannot be read or does not validate.

    ``problems`` holds one line per problem, each ``<field path>: <what is wrong>``;
    ``path`` is the file they belong to.
    """

    exit_code = 2

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{path}: {problem}" for problem in self.problems))


class UsageError(AnomonError):
    """A command names something that does not exist or cannot do what was asked."""

    exit_code = 2


class DataError(AnomonError):
    """An input data file cannot be read or is malformed; the message names file and row."""

    exit_code = 2


class StoreError(AnomonError):
    """The database cannot be reached, read or written."""


class SchemaError(StoreError):
    """The database schema is not the one this version of anomon needs."""


class SourceError(AnomonError):
    """A source could not be collected; the reason is one readable line."""


class DeliveryError(AnomonError):
    """A notification could not be delivered; the reason is one line without secrets.

    ``permanent`` is True when retrying cannot help (a 4xx answer, a refused recipient,
    a rejected login): the notification is then marked dead at once. ``timed_out`` is
    True when the receiver's deadline ended it (a slow or hung receiver). ``output`` is
    what the receiver printed, when it is a program (kept in the notification's row).
    """

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        timed_out: bool = False,
        output: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.timed_out = timed_out
        self.output = output
