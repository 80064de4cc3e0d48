"""incidents and notifications: CHECK constraints on their statuses; a notification's
route and group labels as columns

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-18 10:00:00

Statuses, severities, feedback and events are closed sets (``anomon.model``'s enums):
the database now refuses any other value. A notification keeps its route's path
(``route``: what a route's mute times name) and its group's labels (``group_labels``,
canonical JSON) in columns of their own; they were packed into ``group_key`` and parsed
back. Existing rows get both from their group key. ``output`` keeps what a program
receiver (``kind = "command"``) printed.

Downtime: on SQLite the two tables are rebuilt (a copy of each, seconds for an outbox
of a million rows); on PostgreSQL the constraints are validated by one scan of each.
"""

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the values of the enums as they are at this revision (a later change needs a revision)
INCIDENT_STATUSES = ("firing", "resolved")
SEVERITIES = ("warning", "critical")
FEEDBACK = ("confirmed", "false_alarm", "expected")
EVENTS = ("firing", "resolved", "repeat")
NOTIFICATION_STATUSES = ("pending", "sending", "sent", "dead", "silenced")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route", sa.String(length=200), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("group_labels", sa.Text(), nullable=False,
                                      server_default="{}"))
        batch_op.add_column(sa.Column("output", sa.Text(), nullable=True))
    _split_group_keys()
    with _views_aside():
        with op.batch_alter_table("notifications", schema=None) as batch_op:
            batch_op.create_check_constraint("event", _in("event", EVENTS))
            batch_op.create_check_constraint("status", _in("status", NOTIFICATION_STATUSES))
        with op.batch_alter_table("incidents", schema=None) as batch_op:
            batch_op.create_check_constraint("status", _in("status", INCIDENT_STATUSES))
            batch_op.create_check_constraint("severity", _in("severity", SEVERITIES))
            batch_op.create_check_constraint(
                "feedback", f"feedback IS NULL OR {_in('feedback', FEEDBACK)}"
            )
        _partial_index_back()


def downgrade() -> None:
    with _views_aside():
        with op.batch_alter_table("incidents", schema=None) as batch_op:
            for name in ("feedback", "severity", "status"):
                batch_op.drop_constraint(op.f(f"ck_incidents_{name}"), type_="check")
        _partial_index_back()
        with op.batch_alter_table("notifications", schema=None) as batch_op:
            for name in ("status", "event"):
                batch_op.drop_constraint(op.f(f"ck_notifications_{name}"), type_="check")
            batch_op.drop_column("output")
            batch_op.drop_column("group_labels")
            batch_op.drop_column("route")


@contextmanager
def _views_aside() -> Iterator[None]:
    """On SQLite, drop the views while tables are rebuilt and make them again after, from
    their own text (SQLite checks every view when a rebuilt table is renamed in place)."""
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        yield
        return
    views = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY rowid"
    ).all()
    for name, _ in views:
        op.execute(f'DROP VIEW "{name}"')
    yield
    for _, sql in views:
        op.execute(sql)


def _split_group_keys() -> None:
    """Fill ``route`` and ``group_labels`` of the rows there are from their group key."""
    from anomon.alerts.routing import group_labels_of, route_of  # the key's own syntax

    conn = op.get_bind()
    notifications = sa.table(
        "notifications",
        sa.column("id", sa.Integer),
        sa.column("group_key", sa.String),
        sa.column("route", sa.String),
        sa.column("group_labels", sa.Text),
    )
    keys = conn.execute(sa.select(notifications.c.group_key).distinct()).scalars().all()
    for key in keys:
        labels = dict(sorted(group_labels_of(key).items()))
        conn.execute(
            notifications.update()
            .where(notifications.c.group_key == key)
            .values(
                route=route_of(key),
                group_labels=json.dumps(labels, separators=(",", ":"), ensure_ascii=False),
            )
        )


def _partial_index_back() -> None:
    """SQLite's table rebuild drops the partial index that keeps one firing incident per
    series: make it again (PostgreSQL keeps it, and is left alone)."""
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    present = {index["name"] for index in sa.inspect(conn).get_indexes("incidents")}
    if "uq_incidents_firing_series_id" not in present:
        op.create_index(
            "uq_incidents_firing_series_id",
            "incidents",
            ["series_id"],
            unique=True,
            sqlite_where=sa.text("status = 'firing'"),
        )
