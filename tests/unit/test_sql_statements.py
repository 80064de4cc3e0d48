"""Counting the statements of a source's query, per database's quoting rules (issue 11,
point 13: a second statement is refused before anything is sent)."""

from __future__ import annotations

import pytest

from anomon.store.statements import statement_count

# (sql, PostgreSQL, SQLite, MySQL); an unknown database gets the largest of the three
CASES = [
    ("SELECT 1", 1, 1, 1),
    ("SELECT 1;", 1, 1, 1),
    ("SELECT 1 ;  -- done\n", 1, 1, 1),
    ("", 0, 0, 0),
    (";;", 0, 0, 0),
    ("-- nothing but a comment", 0, 0, 0),
    ("SELECT 1; SELECT 2", 2, 2, 2),
    ("COMMIT; BEGIN READ WRITE; DELETE FROM t; COMMIT; SELECT 1", 5, 5, 5),
    ("SELECT ';'", 1, 1, 1),
    ("SELECT 'it''s; fine'", 1, 1, 1),
    ('SELECT 1 AS "a;b"', 1, 1, 1),
    ("SELECT 1 AS `a;b`", 1, 1, 1),
    ("SELECT 1 -- ; DELETE FROM t", 1, 1, 1),
    ("SELECT 1 /* ; */ FROM t", 1, 1, 1),
    ("SELECT $$;$$", 1, 2, 2),
    ("SELECT $q$ ; $x$ ; $q$", 1, 3, 3),
    ("SELECT a$b$; DELETE FROM t", 2, 2, 2),  # a name with $ signs, not a dollar quote
    ("SELECT $1; DELETE FROM t", 2, 2, 2),
    ("SELECT E'\\'; DELETE FROM t'", 1, 2, 1),
    ("SELECT '\\'; DELETE FROM t; --'", 2, 2, 1),
    ("SELECT 1 /* /* */ ; DELETE FROM t */", 1, 2, 2),
    ("SELECT 1 # ; DELETE FROM t", 2, 2, 1),
    ("SELECT 1 /*! ; DELETE FROM t */", 1, 1, 2),  # MySQL runs what /*! */ holds
    ("SELECT 1--1; DELETE FROM t", 1, 1, 2),  # '--' before a digit is minus minus on MySQL
    ("SELECT [a;b] FROM t", 2, 1, 2),
    ("SELECT 'unterminated; DELETE FROM t", 1, 1, 1),
]


@pytest.mark.parametrize(("sql", "postgresql", "sqlite", "mysql"), CASES)
def test_it_counts_statements_with_each_databases_quoting(
    sql: str, postgresql: int, sqlite: int, mysql: int
) -> None:
    got = {name: statement_count(sql, name) for name in ("postgresql", "sqlite", "mysql")}
    assert got == {"postgresql": postgresql, "sqlite": sqlite, "mysql": mysql}
    assert statement_count(sql, "mariadb") == mysql
    assert statement_count(sql, "mssql") == max(postgresql, sqlite, mysql)
