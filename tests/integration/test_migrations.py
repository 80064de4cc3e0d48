"""Alembic migrations and the start-up schema check, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import inspect

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
