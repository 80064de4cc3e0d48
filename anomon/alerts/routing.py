"""Routing and silences: which receivers hear of an incident, in which group, and when.

Alertmanager's model and vocabulary: routes are tried in order and the first whose
matchers all hold takes the incident (``continue = true`` lets the next ones try too);
an incident no route takes goes to ``[alerts] receiver``. Each route's ``group_by``
labels make the group key: incidents of one group go out together, the first time after
``group_wait``, later changes at most every ``group_interval``, and a firing,
unacknowledged incident is sent again every ``repeat_interval``. Silences are label
matchers with a time range: a matching incident is recorded but not notified.

A regex matcher runs with a deadline (:data:`MATCH_TIMEOUT`, the ``regex`` engine's,
which lets other threads run meanwhile): a pattern that backtracks without end on some
label value (``(\\S|\\s|.)*Z``) would otherwise hold the interpreter -- detection, delivery
and the console with it -- at every cycle and again after a restart. Past its deadline
the matcher does not hold (an alarm a silence could not decide on is told, not lost),
and the log names the pattern.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import regex

from anomon.config import AlertsConfig, RouteConfig, TimeIntervalConfig

Labels = Mapping[str, str]
MATCH_TIMEOUT = 0.05  # seconds one regex matcher may take on one label value

log = logging.getLogger(__name__)
_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|=)(.*)", re.DOTALL)


@dataclass(frozen=True)
class Delivery:
    """Where and how one incident is notified: a receiver, its group and the timing."""

    receiver: str
    route: str  # the route's path (route_path), ROOT_ROUTE for the default receiver
    group_key: str
    group_labels: dict[str, str]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    send_resolved: bool


@dataclass(frozen=True)
class Silence:
    """Label matchers (exact and regex) and the time range they silence."""

    match: Mapping[str, str]
    match_re: Mapping[str, str]
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    during: tuple[TimeIntervalConfig, ...] = ()  # recurring: only within these

    def silences(self, labels: Labels, at: datetime) -> bool:
        """Whether this silence covers an incident with ``labels`` at ``at``."""
        if self.starts_at is not None and at < self.starts_at:
            return False
        if self.ends_at is not None and at >= self.ends_at:
            return False
        if self.during and not any(interval.contains(at) for interval in self.during):
            return False
        return matches(labels, self.match, self.match_re)


def parse_matcher(text: str) -> dict[str, str]:
    """``label=value`` (exact) or ``label=~regex`` as a stored matcher ``{name, value, op}``.

    Raises ValueError naming the text when it is neither, or its regex does not compile.
    """
    found = _MATCHER.fullmatch(text)
    if found is None:
        raise ValueError(
            f"expected LABEL=VALUE or LABEL=~REGEX (a label name: letters, digits and _), "
            f"got: {text!r}"
        )
    # the operator follows the name: a value may hold = and =~ itself (up{job=~"api"})
    name, op, value = found.group(1), found.group(2), found.group(3)
    if op == "=~":
        try:
            _compiled(value)
        except regex.error as exc:
            raise ValueError(f"{text!r}: not a valid regular expression ({exc})") from None
    return {"name": name, "value": value, "op": op}


def matches(labels: Labels, match: Mapping[str, str], match_re: Mapping[str, str]) -> bool:
    """Whether every exact and every regex matcher holds (a missing label is ``""``); a
    regex that runs past :data:`MATCH_TIMEOUT` on a value does not hold."""
    return all(labels.get(name, "") == value for name, value in match.items()) and all(
        _fullmatch(pattern, labels.get(name, "")) for name, pattern in match_re.items()
    )


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


@functools.lru_cache(maxsize=4096)  # an incident's labels are matched again every cycle
def _fullmatch(pattern: str, value: str) -> bool:
    try:
        found = _compiled(pattern).fullmatch(value, timeout=MATCH_TIMEOUT, concurrent=True)
    except TimeoutError:
        log.warning(
            "the regex %r took longer than %gs on a label value of %d characters: it does "
            "not match (simplify it: nested or overlapping repetition backtracks)",
            pattern,
            MATCH_TIMEOUT,
            len(value),
        )
        return False
    return found is not None


def route(labels: Labels, config: AlertsConfig) -> list[Delivery]:
    """Return the deliveries of an incident with ``labels`` (empty: nobody is told)."""
    found: list[Delivery] = []
    for candidate in config.routes:
        if not matches(labels, candidate.match, candidate.match_re):
            continue
        found.append(_delivery(labels, config, candidate, route_path(candidate)))
        if not candidate.continue_:
            return found
    if not found and config.receiver is not None:
        found.append(_delivery(labels, config, None, ROOT_ROUTE))
    return found


ROOT_ROUTE = "{}"  # Alertmanager's name for the root route in a group key
MAX_ROUTE_PATH = 200  # a longer route path is replaced by a hash of it (the column has 400)


def route_path(candidate: RouteConfig) -> str:
    """A route as Alertmanager names it in a group key: ``{}/{severity="critical"}``.

    Built from its matchers, not its position, so reordering the routes keeps every
    group's key (and a group's timing across a reload); a path longer than
    :data:`MAX_ROUTE_PATH` characters is named by a hash of itself.
    """
    matchers = [f"{name}={_quoted(value)}" for name, value in candidate.match.items()]
    matchers += [f"{name}=~{_quoted(value)}" for name, value in candidate.match_re.items()]
    path = f"{ROOT_ROUTE}/{{{','.join(sorted(matchers))}}}"
    if len(path) <= MAX_ROUTE_PATH:
        return path
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    return f'{ROOT_ROUTE}/{{anomon_route="{digest}"}}'


def group_key(path: str, group_labels: Mapping[str, str]) -> str:
    """Alertmanager's group key: ``{}/{severity="critical"}:{entity="churn"}``."""
    pairs = ",".join(f"{name}={_quoted(value)}" for name, value in sorted(group_labels.items()))
    return f"{path}:{{{pairs}}}"


def group_labels_of(key: str) -> dict[str, str]:
    """The group labels a group key stands for (its last ``{…}``), or {} if it cannot be
    read. Keys stored before route paths (``route0:{"entity":"churn"}``) are read too."""
    if not key.startswith("{"):
        try:  # the old form: a position, then the labels as JSON
            old = json.loads(key.split(":", 1)[1])
        except (IndexError, ValueError):
            return {}
        return {str(k): str(v) for k, v in old.items()} if isinstance(old, dict) else {}
    parts = _key_parts(key)
    return dict(parts[-1][0]) if parts else {}


def route_of(key: str) -> str:
    """The route path a group key starts with (``{}/{severity="critical"}``), or "" if
    it cannot be read (keys stored before route paths had positions, not paths)."""
    parts = _key_parts(key) if key.startswith("{") else []
    return key[: parts[-2][1]] if len(parts) >= 2 else ""


def _key_parts(key: str) -> list[tuple[list[tuple[str, str]], int]]:
    """Each brace list of ``{…}/{…}…:{…}`` with where it ends; [] if it cannot be read."""
    position, parts = 0, []
    try:
        while position < len(key):
            pairs, position = _brace_list(key, position)
            parts.append((pairs, position))
            if position < len(key):
                if key[position] not in "/:":
                    return []
                position += 1
    except ValueError:
        return []
    return parts


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


_DECODER = json.JSONDecoder()
_MATCHER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(=~|!=|!~|=)")


def _brace_list(text: str, position: int) -> tuple[list[tuple[str, str]], int]:
    """Read ``{name="value",…}`` at ``position``; return its pairs and where it ends."""
    if text[position] != "{":
        raise ValueError("expected {")
    position += 1
    pairs: list[tuple[str, str]] = []
    while text[position] != "}":
        name = _MATCHER_NAME.match(text, position)
        if name is None:
            raise ValueError("expected a matcher")
        value, position = _DECODER.raw_decode(text, name.end())
        pairs.append((name.group(0)[: -len(name.group(1))], str(value)))
        if text[position] == ",":
            position += 1
    return pairs, position + 1


def _delivery(
    labels: Labels, config: AlertsConfig, chosen: RouteConfig | None, where: str
) -> Delivery:
    def pick(name: str) -> object:
        value = getattr(chosen, name, None) if chosen is not None else None
        return getattr(config, name) if value is None else value

    receiver = chosen.receiver if chosen is not None else config.receiver
    assert receiver is not None
    group_by: Sequence[str] = pick("group_by")  # type: ignore[assignment]
    group_labels = {name: labels.get(name, "") for name in group_by}
    return Delivery(
        receiver=receiver,
        route=where,
        group_key=group_key(where, group_labels),
        group_labels=group_labels,
        group_wait=pick("group_wait"),  # type: ignore[arg-type]
        group_interval=pick("group_interval"),  # type: ignore[arg-type]
        repeat_interval=pick("repeat_interval"),  # type: ignore[arg-type]
        send_resolved=bool(pick("send_resolved")),
    )


def silenced(labels: Labels, silences: Sequence[Silence], at: datetime) -> bool:
    """Whether any of ``silences`` covers ``labels`` at ``at``."""
    return any(silence.silences(labels, at) for silence in silences)


def config_silences(config: AlertsConfig) -> list[Silence]:
    """The silences written in the config file."""
    return [
        Silence(
            dict(s.match),
            dict(s.match_re),
            s.starts_at,
            s.ends_at,
            tuple(config.time_interval(name) for name in s.time_intervals),
        )
        for s in config.silences
    ]


def muted_routes(config: AlertsConfig, at: datetime) -> set[str]:
    """The paths (:func:`route_path`) of the routes muted at ``at`` by one of their
    ``mute_time_intervals``: their notifications are not sent then."""
    return {
        route_path(candidate)
        for candidate in config.routes
        if any(config.time_interval(name).contains(at) for name in candidate.mute_time_intervals)
    }


def stored_silence(
    matchers: Sequence[Mapping[str, str]], starts: datetime, ends: datetime
) -> Silence:
    """A silence from the ``silences`` table: matchers ``{name, value, op}``, op ``=`` or
    ``=~``."""
    exact = {m["name"]: m["value"] for m in matchers if m.get("op", "=") == "="}
    regex = {m["name"]: m["value"] for m in matchers if m.get("op") == "=~"}
    return Silence(exact, regex, starts, ends)


def coverage_problem(
    match: Mapping[str, str], match_re: Mapping[str, str], label_sets: Sequence[Labels]
) -> str | None:
    """Why matchers cover none of ``label_sets`` (the labels incidents would have now),
    in words that point at the likely typo; None when they cover some.

    A label no set has is named with the closest one that exists; an exact value no set
    has for its label, with the closest value that exists.
    """
    if any(matches(labels, match, match_re) for labels in label_sets):
        return None
    if not label_sets:
        return "there are no series yet"
    names = sorted({name for labels in label_sets for name in labels})
    for name in [*match, *match_re]:
        if name not in names:
            return f"no series has the label {name!r}{_closest(name, names, 'label')}"
    for name, value in match.items():
        values = sorted({labels[name] for labels in label_sets if name in labels})
        if value not in values:
            return f"no series has {name}={value!r}{_closest(value, values, 'value')}"
    return "no series has all of these labels at once"


def _closest(word: str, known: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean the {what} {close[0]!r}?)" if close else ""
