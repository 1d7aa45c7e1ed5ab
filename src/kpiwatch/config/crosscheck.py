"""Checks across all rule files, run once every document has been validated.

Sources, teams and KPI ids must be unique over all files (and no source may take a
builtin's name); the sources, teams and leading KPIs a KPI names must exist; a
formula must parse, read only existing KPIs and not depend on itself through others;
a CSV source's ``path`` must be a file rules may read (:mod:`~kpiwatch.config.file_roots`);
the query of a KPI on a SQL source must be one reading statement in that source's dialect.
Names are gathered from the raw data, so an item that failed validation still counts.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kpiwatch.config.document import Doc
from kpiwatch.config.file_roots import FileRoots, load_refusal
from kpiwatch.config.problems import unknown
from kpiwatch.config.rules import BUILTIN_SOURCES, CsvSource, SqlSource
from kpiwatch.config.rules_cache import RulesCache
from kpiwatch.errors import RuleProblem


def cross_check(
    docs: list[Doc], roots: FileRoots | None = None, cache: RulesCache | None = None
) -> list[RuleProblem]:
    """Every problem found across ``docs``: duplicates, references, formulas, SQL queries,
    file paths.

    File paths are checked against ``roots`` only when given: rules loaded from
    text have no rules directory (their files are checked when read). A query that
    ``cache`` says was accepted is not checked again; the ones accepted are noted in it.
    """
    files = _file_paths(docs, roots) if roots is not None else []
    return (
        _duplicates(docs) + _references(docs) + _formulas(docs) + _sql_queries(docs, cache) + files
    )


def _section(doc: Doc, name: str) -> Any:
    return doc.data.get(name) if isinstance(doc.data, dict) else None


def _raw_names(doc: Doc, section: str) -> list[str]:
    """Names declared under ``section``, whether or not their items validated."""
    items = _section(doc, section)
    return [n for n in items if isinstance(n, str)] if isinstance(items, dict) else []


def _raw_ids(doc: Doc) -> list[tuple[int, str]]:
    """(index, id) of every KPI item that has a textual id, valid or not."""
    items = _section(doc, "kpis")
    if not isinstance(items, list):
        return []
    return [
        (i, item["id"])
        for i, item in enumerate(items)
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


def _duplicates(docs: list[Doc]) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    for section, kind in (("sources", "source"), ("teams", "team")):
        first: dict[str, str] = {}
        for doc in docs:
            for name in _raw_names(doc, section):
                if name in first:
                    message = f"duplicate {kind} {name!r} (first defined at {first[name]})"
                    problems.append(doc.problem((section, name), message, key=True))
                first.setdefault(name, doc.at((section, name), key=True))
                if section == "sources" and name in BUILTIN_SOURCES:
                    message = f"source name {name!r} is reserved for the builtin {name} source"
                    problems.append(doc.problem((section, name), message, key=True))
    first_kpi: dict[str, str] = {}
    for doc in docs:
        for index, kpi_id in _raw_ids(doc):
            if kpi_id in first_kpi:
                message = f"duplicate KPI id {kpi_id!r} (first defined at {first_kpi[kpi_id]})"
                problems.append(doc.problem(("kpis", index, "id"), message))
            first_kpi.setdefault(kpi_id, doc.at(("kpis", index)))
    return problems


def _references(docs: list[Doc]) -> list[RuleProblem]:
    """Sources, teams and leading KPIs named by KPIs must exist somewhere."""
    sources = sorted({n for d in docs for n in _raw_names(d, "sources")} | set(BUILTIN_SOURCES))
    teams = sorted({n for d in docs for n in _raw_names(d, "teams")})
    ids = sorted({kpi_id for d in docs for _, kpi_id in _raw_ids(d)})
    problems: list[RuleProblem] = []
    for doc in docs:
        for index, kpi in doc.kpis.items():
            if kpi.source not in sources:
                message = unknown("source", kpi.source, sources)
                problems.append(doc.problem(("kpis", index, "source"), message))
            if kpi.team is not None and kpi.team not in teams:
                message = unknown("team", kpi.team, teams)
                problems.append(doc.problem(("kpis", index, "team"), message))
            for j, name in enumerate(kpi.leading):
                if name not in ids:
                    message = unknown("KPI", name, ids)
                    problems.append(doc.problem(("kpis", index, "leading", j), message))
    return problems


def _file_paths(docs: list[Doc], roots: FileRoots) -> list[RuleProblem]:
    """CSV paths, relative to their rule file's directory, must be files rules may read."""
    problems: list[RuleProblem] = []
    for doc in docs:
        for name, source in doc.sources.items():
            if isinstance(source, CsvSource) and source.path is not None:
                refusal = load_refusal(source.path, Path(doc.file).parent, roots)
                if refusal is not None:
                    problems.append(doc.problem(("sources", name, "path"), refusal))
    return problems


def formula_references(expression: str) -> frozenset[str]:
    """The KPI ids a formula reads: its names, except those called as functions.

    Raises SyntaxError (or ValueError for a NUL byte) for a malformed formula, and
    RecursionError or MemoryError (CPython's parser stack) for one nested too deeply.
    """
    tree = ast.parse(expression, mode="eval")
    nodes = list(ast.walk(tree))
    names = {n.id for n in nodes if isinstance(n, ast.Name)}
    called = {n.func.id for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    return frozenset(names - called)


def _too_complex(exc: Exception) -> str:
    if isinstance(exc, ValueError):
        return str(exc)
    return "nested too deeply (simplify the expression)"


def _formulas(docs: list[Doc]) -> list[RuleProblem]:
    """Formulas must parse, read existing KPIs and not depend on themselves."""
    ids = sorted({kpi_id for d in docs for _, kpi_id in _raw_ids(d)})
    known = set(ids)
    problems: list[RuleProblem] = []
    graph: dict[str, list[str]] = {}
    query_at: dict[str, tuple[Doc, int]] = {}
    seen: set[str] = set()
    for doc in docs:
        for index, kpi in doc.kpis.items():
            # a duplicate id is refused on its own; its formula, which no one will run,
            # must not make a cycle of the first definition's (a false "formula cycle")
            duplicate = kpi.id in seen
            seen.add(kpi.id)
            if kpi.source != "formula" or duplicate:
                continue
            query_at[kpi.id] = (doc, index)
            path = ("kpis", index, "query")
            try:
                inputs = formula_references(kpi.query or "")
            except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
                reason = exc.msg if isinstance(exc, SyntaxError) else _too_complex(exc)
                problems.append(doc.problem(path, f"formula does not parse: {reason}"))
                continue
            for name in sorted(inputs - known):
                problems.append(doc.problem(path, f"formula reads an {unknown('KPI', name, ids)}"))
            graph[kpi.id] = sorted(inputs)
    for cycle in _cycles(graph):
        doc, index = query_at[cycle[0]]
        message = f"formula cycle: {' -> '.join(cycle)}"
        problems.append(doc.problem(("kpis", index, "query"), message))
    return problems


def _sql_queries(docs: list[Doc], cache: RulesCache | None = None) -> list[RuleProblem]:
    """A SQL KPI's query must pass the statement check, in its source's dialect."""
    urls = {n: s.url for d in docs for n, s in d.sources.items() if isinstance(s, SqlSource)}
    if not urls:
        return []
    # imported here: sqlglot is only loaded for rules that have SQL sources
    from kpiwatch.sources.sql_guard import dialect_of, statement_problem, vouch

    check = statement_problem if cache is None else cache.statement_check(statement_problem, vouch)
    dialects = {name: dialect_of(url) for name, url in urls.items()}
    problems: list[RuleProblem] = []
    for doc in docs:
        for index, kpi in doc.kpis.items():
            if kpi.source in dialects and kpi.query is not None:
                reason = check(kpi.query, dialects[kpi.source])
                if reason is not None:
                    problems.append(doc.problem(("kpis", index, "query"), reason))
            plan = kpi.target.plan_query if kpi.target is not None else None
            if kpi.source in dialects and plan is not None:
                reason = check(plan, dialects[kpi.source])
                if reason is not None:
                    problems.append(doc.problem(("kpis", index, "target", "plan_query"), reason))
        for name, source in doc.sources.items():
            if isinstance(source, SqlSource) and source.freshness is not None:
                reason = check(source.freshness.query, dialects[name])
                if reason is not None:
                    where = ("sources", name, "freshness", "query")
                    problems.append(doc.problem(where, reason))
    return problems


def _cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle (``[a, b, a]``) per loop found by a depth-first search, in graph order."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for start in graph:
        if start in state:
            continue
        path, stack = [start], [iter(graph[start])]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                cycle = [*path[path.index(child) :], child]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
            elif child not in state and child in graph:
                state[child] = 1
                path.append(child)
                stack.append(iter(graph[child]))
    return cycles
