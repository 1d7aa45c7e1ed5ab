"""The statement check itself, with sqlglot: is a query one reading statement?

:func:`statement_problem` is the rule; :mod:`kpiwatch.sources.sql_guard` says when it
runs (at load, before each fetch, unless a trusted rules cache vouched for the query)
and imports this module, and with it sqlglot, only then.
"""

from __future__ import annotations

import functools
import logging

import sqlglot
from sqlglot import Token, TokenType, exp
from sqlglot.errors import SqlglotError

# sqlglot warns through logging each time it falls back to an opaque Command; that is
# an answer here (a refusal), not something for the operator's log
logging.getLogger("sqlglot").setLevel(logging.ERROR)

_TOP_LEVEL = (exp.Select, exp.SetOperation, exp.Values, exp.Show, exp.Subquery)
# nodes that write, change the session or reach outside the database, wherever they are
_REFUSED: dict[type[exp.Expression], str] = {
    exp.Insert: "INSERT",
    exp.Update: "UPDATE",
    exp.Delete: "DELETE",
    exp.Merge: "MERGE",
    exp.Create: "CREATE",
    exp.Drop: "DROP",
    exp.Alter: "ALTER",
    exp.TruncateTable: "TRUNCATE",
    exp.Copy: "COPY",
    exp.Pragma: "PRAGMA",
    exp.Attach: "ATTACH",
    exp.Detach: "DETACH",
    exp.Set: "SET",
    exp.Into: "SELECT ... INTO",
    exp.Lock: "a row lock (FOR UPDATE / FOR SHARE)",
    exp.Command: "a statement kpiwatch cannot inspect",
    exp.Transaction: "a transaction statement",
    exp.Commit: "a transaction statement",
    exp.Rollback: "a transaction statement",
}
# functions that change the session, by lower-case name: SET by another name. A KPI's
# query shares its transaction with the next queries of its run (sql_session), so a
# setting it changed would reach theirs until the run's rollback
_REFUSED_CALLS = {"set_config": "set_config() (it changes a session setting, as SET does)"}
# the fallback: what a reading statement may start with, and keywords no reading query needs
_READ_STARTS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "("})
_WRITE_WORDS = frozenset(
    {
        "INTO", "OUTFILE", "DUMPFILE", "COPY", "PRAGMA", "ATTACH", "DETACH", "VACUUM",
        "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT", "CREATE", "DROP",
        "ALTER", "TRUNCATE", "GRANT", "REVOKE", "CALL", "DO", "EXECUTE", "EXEC", "SET",
        "LOCK", "UNLOCK", "COMMIT", "ROLLBACK", "BEGIN", "LOAD", "HANDLER", "RENAME",
        "REINDEX", "CLUSTER", "REFRESH", "NOTIFY", "LISTEN", "PREPARE", "DEALLOCATE",
        "SHARE", "SET_CONFIG",
    }
)  # fmt: skip
_HINT = "a KPI query must be a single SELECT (or WITH ... SELECT, VALUES, TABLE, SHOW)"


@functools.lru_cache(maxsize=65_536)
def statement_problem(query: str, dialect: str | None) -> str | None:
    """Why ``query`` may not run as a KPI query, or None when it is one reading statement."""
    try:
        statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
    except (SqlglotError, RecursionError):  # the parser recurses: a deeply nested query
        return _token_problem(query, dialect)
    try:
        return _tree_problem(statements)
    finally:
        _unlink(statements)


def _tree_problem(statements: list[exp.Expr]) -> str | None:
    if not statements:
        return f"the query is empty; {_HINT}"
    if len(statements) > 1:
        return f"{len(statements)} statements; {_HINT}"
    statement = statements[0]
    if isinstance(statement, exp.Command) and statement.name.upper() == "SHOW":
        return None  # PostgreSQL's SHOW, which sqlglot keeps as an opaque command
    for node in statement.walk():
        for kind, what in _REFUSED.items():
            if isinstance(node, kind):
                return f"{_named(node, what)} is refused; {_HINT}"
        if isinstance(node, exp.Anonymous) and node.name.lower() in _REFUSED_CALLS:
            return f"{_REFUSED_CALLS[node.name.lower()]} is refused; {_HINT}"
    if not isinstance(statement, _TOP_LEVEL):
        return f"{statement.key.upper()} is refused; {_HINT}"
    return None


def _unlink(statements: list[exp.Expr]) -> None:
    """Drop each node's link to its parent, so the tree is freed as soon as it is dropped.

    Parent links make every parsed tree a cycle, which only the cyclic collector frees:
    while it is paused (the rules load: :func:`~kpiwatch.config.loader.collector_paused`)
    10,000 queries left ~90 MB of trees behind, and that memory stayed with the process.
    """
    for statement in statements:
        for node in statement.walk():
            node.parent = None


def _named(node: exp.Expression, what: str) -> str:
    if isinstance(node, exp.Command):
        return f"{node.name.upper()} ({what})"
    return what


def _token_problem(query: str, dialect: str | None) -> str | None:
    """The conservative check, for a query sqlglot's parser cannot read."""
    try:
        tokens = sqlglot.Dialect.get_or_raise(dialect).tokenize(query)
    except SqlglotError as exc:
        return f"the query cannot be read ({_first_line(exc)}); {_HINT}"
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens.pop()
    if not tokens:
        return f"the query is empty; {_HINT}"
    if any(t.token_type == TokenType.SEMICOLON for t in tokens):
        return f"several statements; {_HINT}"
    if _word(tokens[0]) not in _READ_STARTS:
        return f"{tokens[0].text.upper()} is refused; {_HINT}"
    for token in tokens:
        word = _word(token)
        if word in _WRITE_WORDS:
            return f"{word} is refused (in a query that was checked word by word); {_HINT}"
    return None


def _word(token: Token) -> str:
    # strings, quoted names and numbers are data, never keywords
    if token.token_type in (TokenType.STRING, TokenType.NUMBER, TokenType.IDENTIFIER):
        return ""
    if token.token_type == TokenType.VAR and token.text.startswith(("`", '"')):
        return ""
    return token.text.upper()


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
