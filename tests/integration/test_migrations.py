"""Alembic migrations and the start-up schema check, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from anomon import store
from anomon.errors import SchemaError, StoreError
from anomon.store import migrate
from anomon.store.schema import metadata

EXTRA_REVISION = '''"""a later revision, for tests"""
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("later", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("later")
'''


def tables(engine: store.Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_upgrade_check_downgrade_upgrade_round_trip(database_url: str) -> None:
    engine = store.open_engine(database_url)
    store.upgrade(engine)
    assert store.current_revision(engine) == store.head_revision()
    assert tables(engine) >= set(metadata.tables)
    assert store.check(engine) == []
    store.downgrade(engine, "base")
    assert store.current_revision(engine) is None
    assert not tables(engine) & set(metadata.tables)
    store.upgrade(engine)
    assert store.check(engine) == []
    engine.dispose()


def test_check_reports_a_schema_that_drifted_from_the_models(engine: store.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_series_entity")
    differences = store.check(engine)
    assert differences and "ix_series_entity" in " ".join(differences)


def test_ensure_schema_creates_an_empty_database_then_leaves_it(database_url: str) -> None:
    engine = store.open_engine(database_url)
    assert store.ensure_schema(engine, migrate=False).startswith("created the schema")
    assert store.ensure_schema(engine, migrate=False) == "up to date"
    engine.dispose()


@pytest.fixture
def later_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Pretend this anomon has one more revision than the database (a newer release)."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), copy)
    head = store.head_revision()
    (copy / "versions" / "9001_later.py").write_text(EXTRA_REVISION.format(head=head))
    monkeypatch.setattr(migrate, "migrations_dir", lambda: copy)
    return head


def test_a_database_behind_head_is_refused_naming_the_command(
    engine: store.Engine, later_head: str
) -> None:
    with pytest.raises(
        SchemaError, match=rf"at revision {later_head}, behind 9001: run `anomon db upgrade`"
    ):
        store.ensure_schema(engine, migrate=False)
    assert "later" not in tables(engine)


def test_a_database_behind_head_is_migrated_when_asked(
    engine: store.Engine, later_head: str
) -> None:
    assert (
        store.ensure_schema(engine, migrate=True)
        == f"migrated the schema from {later_head} to 9001"
    )
    assert "later" in tables(engine)
    assert store.current_revision(engine) == "9001"


def test_a_revision_from_a_newer_anomon_is_refused(engine: store.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d'")
    with pytest.raises(
        SchemaError, match=r"revision f00d, which this anomon does not know.*upgrade anomon"
    ):
        store.ensure_schema(engine, migrate=True)


def test_tables_of_the_same_name_without_a_revision_are_refused(database_url: str) -> None:
    engine = store.open_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE series (id integer)")
    with pytest.raises(StoreError, match="already has tables series but no anomon schema revision"):
        store.ensure_schema(engine, migrate=True)
    engine.dispose()


def test_0009_splits_stored_group_keys_and_checks_statuses(database_url: str) -> None:
    """An outbox written before 0009 gets each row's route and group labels from its
    group key (both key forms, and a key that cannot be read), and the rebuilt incidents
    table keeps what refers to it (SQLite: its notifications, its anomalies' link);
    afterwards the database refuses a status outside its enum, on both tables."""
    engine = store.open_engine(database_url)
    store.upgrade(engine, "0008")
    now = "2026-12-01 10:00:00+00:00" if engine.dialect.name == "postgresql" else "2026-12-01"
    keys = ['{}/{severity="critical"}:{entity="churn",model="a:b"}', 'route0:{"entity":"x"}', "g"]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO series (id, metric, labels, source, entity, kind, unit, "
                "created_at) VALUES (1, 'latency', '{}', 's', 'churn', 'latency', '', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO incidents (id, entity, metric, labels, status, severity, "
                "peak_score, opened_at, last_seen_at, silenced, version) VALUES "
                "(1, 'churn', 'latency', '{}', 'firing', 'critical', 99, :now, :now, false, 1)"
            ),
            {"now": now},
        )
        for i, key in enumerate(keys):
            conn.execute(
                text(
                    "INSERT INTO notifications (incident_id, receiver, group_key, event, "
                    "status, idempotency_key, attempts, next_attempt_at, created_at) VALUES "
                    "(1, 'hook', :key, 'firing', 'pending', :ik, 0, :now, :now)"
                ),
                {"key": key, "ik": f"k{i}", "now": now},
            )
        conn.execute(
            text(
                "INSERT INTO anomalies (series_id, ts, value, expected, score, "
                "detector_scores, direction, severity, incident_id, config_hash, "
                "detector_version, detected_at) VALUES "
                "(1, 60, 9, 1, 99, '{}', 'up', 'critical', 1, 'h', '2', :now)"
            ),
            {"now": now},
        )
    store.upgrade(engine)
    assert store.check(engine) == []
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT group_key, route, group_labels FROM notifications ORDER BY id")
        ).all()
        linked = conn.execute(text("SELECT incident_id FROM anomalies")).scalar_one()
    assert linked == 1
    assert [(route, labels) for _, route, labels in rows] == [
        ('{}/{severity="critical"}', '{"entity":"churn","model":"a:b"}'),
        ("", '{"entity":"x"}'),
        ("", "{}"),
    ]
    for statement in (
        "UPDATE incidents SET status = 'open' WHERE id = 1",
        "UPDATE incidents SET feedback = 'meh' WHERE id = 1",
        "UPDATE notifications SET status = 'lost'",
        "UPDATE notifications SET event = 'boom'",
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.begin() as conn:  # the values of the enums pass
        conn.execute(text("UPDATE incidents SET feedback = 'false_alarm', status = 'resolved'"))
    engine.dispose()


@pytest.mark.postgres
def test_workers_that_start_together_migrate_the_schema_once(postgres_schema_url: str) -> None:
    """Several `anomon run` on one PostgreSQL, started at once on an empty database (or
    one behind, with --migrate): one migrates, the others wait for it and find the
    schema at head -- none fails on tables another is creating."""
    starting = 3
    engines = [store.open_engine(postgres_schema_url) for _ in range(starting)]
    gate = threading.Barrier(starting, timeout=30)
    done: list[str] = []
    failed: list[BaseException] = []

    def start(engine: store.Engine) -> None:
        try:
            gate.wait()
            done.append(store.ensure_schema(engine, migrate=True))
        except BaseException as exc:  # reported by the test, whatever it is
            failed.append(exc)

    threads = [threading.Thread(target=start, args=(e,), daemon=True) for e in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads), "a start hung"
        assert failed == []
        assert sorted(done) == [
            f"created the schema (revision {migrate.head_revision()})",
            *["up to date (another worker migrated it)"] * (starting - 1),
        ]
        assert migrate.current_revision(engines[0]) == migrate.head_revision()
        assert migrate.check(engines[0]) == []
    finally:
        for engine in engines:
            engine.dispose()
