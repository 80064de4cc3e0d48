"""Shared fixtures: real databases (a SQLite file, a PostgreSQL schema) and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from anomon import store
from anomon.model import Sample

ROOT = Path(__file__).resolve().parent.parent
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server: $ANOMON_TEST_DATABASE_URL, else 127.0.0.1:5432, else skip.

    Under scripts/test (ANOMON_REQUIRE_POSTGRES=1) a missing server fails instead.
    """
    url = os.environ.get("ANOMON_TEST_DATABASE_URL") or LOCAL_POSTGRES
    try:
        psycopg.connect(_libpq(url), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("ANOMON_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL required but not reachable at {url}: {exc}")
        pytest.skip(f"no PostgreSQL at {url} (set ANOMON_TEST_DATABASE_URL)")
    return url


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    name = f"anomon_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{name}"
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'anomon.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[store.Engine]:
    """An engine on an empty database migrated to the newest schema."""
    engine = store.open_engine(database_url)
    store.upgrade(engine)
    yield engine
    engine.dispose()


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m anomon ARGS`` as a subprocess and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "anomon", *args],
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def save_samples(
    engine: store.Engine, samples: list[Sample], *, at: datetime | None = None
) -> None:
    """Store ``samples`` as one collection of their source, made at ``at`` (now)."""
    moment = at or datetime.now(UTC)
    store.save_collection(
        engine,
        store.SeriesRegistry(),
        source=samples[0].info.source,
        started_at=moment,
        finished_at=moment,
        samples=samples,
    )


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
