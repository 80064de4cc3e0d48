"""Count the statements of a user's SQL text without running it (the ``sql`` source's guard).

A statement ends at a ``;`` outside string literals, quoted names and comments; empty
statements (a trailing ``;``, comments alone) are not counted. Each database quotes in
its own way, so the text is read with that database's rules (:data:`LEXES`); for one
anomon does not know, with every set of rules it knows, and the largest count wins: a
query that looks like two statements to any of them is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lexis:
    """How one database spells literals and comments."""

    backslash: bool = False  # \' escapes a quote in '…' and "…" (MySQL)
    e_strings: bool = False  # E'…' strings take backslash escapes (PostgreSQL)
    dollar: bool = False  # $tag$…$tag$ strings (PostgreSQL)
    nested: bool = False  # /* /* */ */ nests (PostgreSQL)
    hash_comments: bool = False  # '# …' runs to the end of the line (MySQL)
    dash_space: bool = False  # '--' starts a comment only before a space (MySQL)
    brackets: bool = False  # [name] quotes a name (SQLite, SQL Server)


POSTGRESQL = Lexis(e_strings=True, dollar=True, nested=True)
SQLITE = Lexis(brackets=True)
MYSQL = Lexis(backslash=True, hash_comments=True, dash_space=True)
LEXES = {"postgresql": POSTGRESQL, "sqlite": SQLITE, "mysql": MYSQL, "mariadb": MYSQL}

_DOLLAR = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")
_QUOTES = {"'": "'", '"': '"', "`": "`"}


def statement_count(sql: str, dialect: str) -> int:
    """Return how many statements ``sql`` holds for ``dialect`` (a SQLAlchemy dialect
    name); for an unknown one, the most that any known database would see."""
    lexis = LEXES.get(dialect)
    readings = (lexis,) if lexis is not None else tuple(set(LEXES.values()))
    return max(_count(sql, reading) for reading in readings)


def _count(sql: str, lexis: Lexis) -> int:
    count, pending, at = 0, False, 0
    while at < len(sql):
        char = sql[at]
        if char == ";":
            count, pending, at = count + pending, False, at + 1
        elif char.isspace():
            at += 1
        elif (end := _comment_end(sql, at, lexis)) is not None:
            at = end
        else:
            pending, at = True, _token_end(sql, at, lexis)
    return count + pending


def _comment_end(sql: str, at: int, lexis: Lexis) -> int | None:
    """Where the comment starting at ``at`` ends (the text's end if never closed), or
    None when no comment starts there."""
    two = sql[at : at + 2]
    after = sql[at + 2 : at + 3]
    dashes = two == "--" and (not lexis.dash_space or after == "" or after.isspace())
    if dashes or (lexis.hash_comments and sql[at] == "#"):
        newline = sql.find("\n", at)
        return len(sql) if newline < 0 else newline + 1
    if two != "/*" or (lexis.hash_comments and sql[at + 2 : at + 3] == "!"):
        return None  # MySQL runs what /*! … */ holds: it is not a comment
    depth, at = 1, at + 2
    while at < len(sql) and depth:
        pair = sql[at : at + 2]
        if pair == "*/":
            depth, at = depth - 1, at + 2
        elif lexis.nested and pair == "/*":
            depth, at = depth + 1, at + 2
        else:
            at += 1
    return at


def _token_end(sql: str, at: int, lexis: Lexis) -> int:
    """Where the token starting at ``at`` ends: past a whole literal or quoted name
    (the text's end if never closed), else one character on."""
    char = sql[at]
    if char in _QUOTES:
        prefix_e = lexis.e_strings and at > 0 and sql[at - 1] in "eE" and not _word(sql, at - 2)
        escapes = char != "`" and (lexis.backslash or (char == "'" and prefix_e))
        return _quoted_end(sql, at, char, escapes)
    if char == "[" and lexis.brackets:
        close = sql.find("]", at + 1)
        return len(sql) if close < 0 else close + 1
    if char == "$" and lexis.dollar and not _word(sql, at - 1):
        tag = _DOLLAR.match(sql, at)
        if tag:
            close = sql.find(tag.group(), tag.end())
            return len(sql) if close < 0 else close + len(tag.group())
    return at + 1


def _quoted_end(sql: str, at: int, quote: str, escapes: bool) -> int:
    at += 1
    while at < len(sql):
        char = sql[at]
        if escapes and char == "\\":
            at += 2
        elif char == quote and sql[at + 1 : at + 2] == quote:
            at += 2  # a doubled quote stands for itself
        elif char == quote:
            return at + 1
        else:
            at += 1
    return len(sql)


def _word(sql: str, at: int) -> bool:
    """Whether ``sql[at]`` is part of a name (so a following quote or $ belongs to it)."""
    return at >= 0 and (sql[at].isalnum() or sql[at] in "_$")
