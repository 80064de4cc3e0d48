"""Draw the series around an incident as a small PNG for emails.

:func:`render_chart` draws the values, the expected values where known (dashed), the
anomalous points in red and the incident's span shaded, on a UTC time axis, and returns
PNG bytes (640 x 240 px by default).

It uses matplotlib's object-oriented API on an Agg canvas, never pyplot: pyplot keeps
global state and is not safe in the daemon's worker threads. matplotlib is imported on
the first call, not with this module, because importing it takes a second or more.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING

from anomon.alerts.model import IncidentView, Points
from anomon.timeutil import from_epoch, to_epoch

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WIDTH_PX = 640
HEIGHT_PX = 240
DPI = 100
VALUE_COLOUR = "#1f77b4"
EXPECTED_COLOUR = "#7f7f7f"
ANOMALY_COLOUR = "#d62728"
DEPLOY_COLOUR = "#2ca02c"


def render_chart(
    incident: IncidentView, *, width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX
) -> bytes:
    """Return a PNG of ``incident.points``.

    Raises ValueError if there are no points or their times and values differ in number.
    """
    points = _checked_points(incident)
    end = incident.resolved_at or incident.last_seen_at
    return render_series(
        points,
        f"{incident.metric} on {incident.entity}",
        spans=[(to_epoch(incident.opened_at), to_epoch(end))],
        width_px=width_px,
        height_px=height_px,
    )


def render_series(
    points: Points,
    heading: str,
    *,
    spans: Sequence[tuple[int, int]] = (),
    deploys: Sequence[tuple[int, str]] = (),
    width_px: int = WIDTH_PX,
    height_px: int = HEIGHT_PX,
    image_format: str = "png",
) -> bytes:
    """Return a PNG of a series: values, expected values, anomalies, ``spans``
    (epoch-second ranges, e.g. incidents) shaded, and ``deploys`` (epoch second, what:
    ``v2``) as labelled vertical lines, as ``image_format`` (``png`` or ``svg``, whose
    text is drawn as paths: nothing in it is markup). Needs at least one point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(figure)  # attaches itself: the figure draws with Agg, no GUI, no pyplot
    axes = figure.add_subplot()
    _draw_series(axes, points)
    for start, stop in spans:
        _shade(axes, start, stop)
    for at, what in deploys:
        _deploy_line(axes, at, what)
    _style(axes, heading)
    figure.subplots_adjust(left=0.09, right=0.98, top=0.88, bottom=0.16)
    buffer = io.BytesIO()
    if image_format == "svg":
        from matplotlib import rc_context

        with rc_context({"svg.fonttype": "path", "svg.hashsalt": "anomon"}):
            figure.savefig(buffer, format="svg")
    else:
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _checked_points(incident: IncidentView) -> Points:
    points = incident.points
    if points is None or not points.ts:
        raise ValueError(f"incident {incident.id} has no points to chart")
    if len(points.values) != len(points.ts):
        raise ValueError(
            f"points of incident {incident.id} must have one value per time, "
            f"got: {len(points.ts)} times and {len(points.values)} values"
        )
    return points


def _draw_series(axes: Axes, points: Points) -> None:
    times = _dates(points.ts)
    axes.plot(times, list(points.values), color=VALUE_COLOUR, linewidth=1.2, label="value")
    expected = _aligned(points.expected, len(times))
    if any(math.isfinite(e) for e in expected):
        axes.plot(
            times, expected, color=EXPECTED_COLOUR, linewidth=1, linestyle="--", label="expected"
        )
    value_at = dict(zip(points.ts, points.values, strict=False))
    marked = [ts for ts in points.anomalies if ts in value_at]
    if marked:
        axes.scatter(
            _dates(marked),
            [value_at[ts] for ts in marked],
            color=ANOMALY_COLOUR,
            s=14,
            zorder=3,
            label="anomaly",
        )


def _dates(epochs: Sequence[int]) -> list[float]:
    """Return matplotlib's date numbers (days since its epoch) of epoch seconds."""
    from matplotlib.dates import date2num

    # matplotlib.dates ships no type hints; date2num takes aware datetimes as UTC
    return [float(x) for x in date2num([from_epoch(ts) for ts in epochs])]  # type: ignore[no-untyped-call]


def _aligned(expected: Sequence[float], size: int) -> list[float]:
    # expected may be shorter than the series (or empty): pad with NaN, which plots as a gap
    values = [float(e) for e in expected[:size]]
    return values + [math.nan] * (size - len(values))


def _shade(axes: Axes, start_s: int, stop_s: int) -> None:
    start, stop = _dates([start_s, stop_s])
    if stop <= start:  # a one-point incident still gets a visible line
        axes.axvline(start, color=ANOMALY_COLOUR, alpha=0.3, linewidth=2)
        return
    axes.axvspan(start, stop, color=ANOMALY_COLOUR, alpha=0.08, linewidth=0)


def _deploy_line(axes: Axes, at_s: int, what: str) -> None:
    (at,) = _dates([at_s])
    axes.axvline(at, color=DEPLOY_COLOUR, linewidth=1, linestyle=":", label="deploy")
    axes.annotate(
        _plain(what),
        xy=(at, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(2, -9),
        textcoords="offset points",
        fontsize=6,
        color=DEPLOY_COLOUR,
    )


def _style(axes: Axes, heading: str) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    axes.set_title(_plain(heading), fontsize=9, loc="left")
    axes.set_xlabel("UTC", fontsize=7)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3, linewidth=0.5)
    axes.xaxis.get_offset_text().set_fontsize(7)
    # above the plot, right of the title: inside it would hide the points that matter
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one "deploy" entry for many lines
    axes.legend(
        list(unique.values()),
        list(unique),
        fontsize=7,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=3,
        frameon=False,
        borderaxespad=0.2,
    )


def _plain(text: str) -> str:
    # a "$" in a metric name would start matplotlib's math mode (and may fail to parse)
    return text.replace("$", r"\$")
