"""Load a directory of rule files into one checked :class:`RuleSet`, or report every problem.

Each file is composed with PyYAML (nodes keep their positions; libyaml's parser while
everything is clean, PyYAML's own to report problems), checked for duplicate keys,
interpolated (``${VAR}``), constructed and validated by the models of
:mod:`kpiwatch.config.rules`; equal parts of the KPIs are then shared. Pydantic's error
locations are mapped back to YAML nodes, so every problem reads
``file:line:col: path: message``. Cross-file checks (unique ids, references, formulas)
run last; all problems found are raised together. This module reads the files and
assembles the result; composing a document is in :mod:`~kpiwatch.config.document`,
wording validation errors in :mod:`~kpiwatch.config.problems`, the cross-file checks
in :mod:`~kpiwatch.config.crosscheck`.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from kpiwatch import heap
from kpiwatch.config.crosscheck import cross_check, formula_references
from kpiwatch.config.document import Doc, DocPath, SourceModel, Where, compose
from kpiwatch.config.fast_yaml import fast_possible
from kpiwatch.config.file_roots import FileRoots
from kpiwatch.config.kpi_spans import reused, spans_kept
from kpiwatch.config.problems import translate
from kpiwatch.config.rules import Kpi, RuleFile, RuleSet, Source, Team
from kpiwatch.config.rules_cache import Damaged, RulesCache, split
from kpiwatch.config.sharing import Sharing
from kpiwatch.errors import RuleLoadError, RuleProblem

__all__ = [
    "LoadedRules",
    "SourceModel",
    "Where",
    "formula_references",
    "load_rule_text",
    "load_rules",
]

_RULE_SUFFIXES = (".yaml", ".yml")
_SOURCE_ADAPTER: TypeAdapter[SourceModel] = TypeAdapter(Source)


@dataclass(frozen=True)
class LoadedRules:
    """Rules that loaded cleanly, with where each piece was written."""

    rules: RuleSet
    files: tuple[Path, ...]
    locations: Mapping[str, Where]  # KPI id -> its item in a rule file
    fingerprint: str  # sha256 of the files' names and contents, to notice changes
    team_locations: Mapping[str, Where] = field(default_factory=dict)  # team -> its key
    source_locations: Mapping[str, Where] = field(default_factory=dict)  # source -> its key
    # where CSV paths were checked to be (None: loaded from text, not checked); the
    # sources read with the same roots
    file_roots: FileRoots | None = None


def load_rules(
    rules_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    file_roots: Iterable[Path] = (),
    cache_dir: Path | None = None,
) -> LoadedRules:
    """Load every ``*.yaml``/``*.yml`` under ``rules_dir`` (recursively, sorted).

    CSV paths must lie inside ``rules_dir`` or one of ``file_roots`` (the
    setting ``file_roots``, KPIWATCH_FILE_ROOTS; none by default).
    With ``cache_dir`` (the setting ``cache_dir``), what a clean load parsed and
    checked is kept there, and the next load of unchanged files skips that work
    (:mod:`~kpiwatch.config.rules_cache`); the result is the same.
    Raises RuleLoadError listing every problem found, each with file:line:col.
    """
    try:
        return _load_dir(rules_dir, env, file_roots, cache_dir)
    finally:
        heap.trim()  # the files' texts, the cache and the parse trees are gone now


def _load_dir(
    rules_dir: Path,
    env: Mapping[str, str] | None,
    file_roots: Iterable[Path],
    cache_dir: Path | None,
) -> LoadedRules:
    env = os.environ if env is None else env
    roots = FileRoots.of(rules_dir, file_roots)
    paths = _rule_files(rules_dir)
    digest = hashlib.sha256()
    problems: list[RuleProblem] = []
    texts: list[tuple[str, str]] = []
    for path in paths:
        text = _read(path, path.relative_to(rules_dir).as_posix(), digest, problems)
        if text is not None:
            texts.append((str(path), text))
    with collector_paused():
        cache = RulesCache.open(cache_dir, rules_dir) if cache_dir is not None else None
        return _checked(texts, tuple(paths), digest.hexdigest(), env, problems, roots, cache)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile. A load allocates hundreds of thousands of
    objects and frees almost none, so the collector's passes over them find nothing:
    at 10,000 KPIs they cost about a fifth of the load."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def load_rule_text(
    text: str, filename: str = "<string>", env: Mapping[str, str] | None = None
) -> LoadedRules:
    """Load a single rule document given as text (tests, ``kpiwatch test``)."""
    env = os.environ if env is None else env
    fingerprint = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return _checked([(filename, text)], (), fingerprint, env, [])


def load_rule_files(paths: Sequence[Path], env: Mapping[str, str] | None = None) -> LoadedRules:
    """Load the named rule files together, as :func:`load_rules` loads a directory
    (``kpiwatch test``'s ``rule_files``); problems name each file as given. CSV paths are
    not checked against file roots: a rule test reads no source."""
    env = os.environ if env is None else env
    digest = hashlib.sha256()
    problems: list[RuleProblem] = []
    texts: list[tuple[str, str]] = []
    for path in paths:
        text = _read(path, str(path), digest, problems)
        if text is not None:
            texts.append((str(path), text))
    return _checked(texts, tuple(paths), digest.hexdigest(), env, problems)


# ---------------------------------------------------------------- files


def _rule_files(rules_dir: Path) -> list[Path]:
    if not rules_dir.is_dir():
        what = "does not exist" if not rules_dir.exists() else "is not a directory"
        raise RuleLoadError([_whole(str(rules_dir), f"rules directory {what}")])
    paths = [
        p
        for p in rules_dir.rglob("*")
        if p.suffix in _RULE_SUFFIXES
        and not _rule_test(p)
        and p.is_file()
        and not _hidden(p.relative_to(rules_dir))
    ]
    if not paths:
        raise RuleLoadError(
            [_whole(str(rules_dir), "no rule files (*.yaml, *.yml) in the rules directory")]
        )
    return sorted(paths, key=lambda p: p.relative_to(rules_dir).as_posix())


def _rule_test(path: Path) -> bool:
    # churn.test.yaml beside the rules is a `kpiwatch test` file, not a rule file
    return path.stem.endswith(".test")


def _hidden(relative: Path) -> bool:
    # editors leave lock and backup files such as .#churn.yaml next to the real ones
    return any(part.startswith(".") for part in relative.parts)


def _whole(name: str, message: str) -> RuleProblem:
    """A problem about a whole directory or file: no position to give."""
    return RuleProblem(name, 0, 0, "", message)


def _read(path: Path, name: str, digest: Any, problems: list[RuleProblem]) -> str | None:
    """The file's text; its name and bytes go into the fingerprint."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(_whole(str(path), f"cannot read: {exc.strerror or exc}"))
        return None
    digest.update(name.encode("utf-8", "surrogateescape") + b"\0" + raw + b"\0")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        problems.append(RuleProblem(str(path), line, column, "", "not valid UTF-8 text"))
        return None


# ---------------------------------------------------------------- one document


def _checked(
    texts: list[tuple[str, str]],
    files: tuple[Path, ...],
    fingerprint: str,
    env: Mapping[str, str],
    problems: list[RuleProblem],
    roots: FileRoots | None = None,
    cache: RulesCache | None = None,
) -> LoadedRules:
    """The rules from (file name, text) pairs, or every problem in them.

    Rules that load cleanly are parsed by libyaml (or taken from ``cache``); at the
    first problem the files are loaded again with PyYAML's Python parser, whose
    problems (positions and words) are the ones reported. Errors cost twice the time;
    clean loads are ~10x faster.
    """
    if not problems:
        try:
            return _fast(texts, files, fingerprint, env, roots, cache)
        except _NotClean:
            pass
    docs = _documents(texts, env, problems, fast=False)
    return _assemble(docs, files, fingerprint, problems, roots)


def _fast(
    texts: list[tuple[str, str]],
    files: tuple[Path, ...],
    fingerprint: str,
    env: Mapping[str, str],
    roots: FileRoots | None,
    cache: RulesCache | None,
) -> LoadedRules:
    """A clean load the fast way (the cache kept up to date), or _NotClean."""
    try:
        docs = _documents(texts, env, [], fast=True, cache=cache)
    except Damaged:  # a cached entry was not what the cache writes: read every file
        assert cache is not None  # only a cache's entries are damaged
        cache.forget()
        docs = _documents(texts, env, [], fast=True, cache=cache)
    loaded = _assemble(docs, files, fingerprint, [], roots, fast=True, cache=cache)
    if cache is not None:
        cache.save()
    return loaded


class _NotClean(Exception):
    """A fast load met a problem: load again the careful way."""


def _documents(
    texts: list[tuple[str, str]],
    env: Mapping[str, str],
    problems: list[RuleProblem],
    *,
    fast: bool,
    cache: RulesCache | None = None,
) -> list[Doc]:
    """Each document composed and validated; with ``fast``, raises _NotClean at a problem.

    Fast: each file the cache holds is taken from it, each other one libyaml parses
    unless it has what libyaml reads differently (:func:`fast_possible`), which
    PyYAML's Python parser then reads (as the careful way would, with the same result).
    A changed file whose other KPI items the cache holds by their text is parsed
    without them (:mod:`~kpiwatch.config.kpi_spans`).
    With a cache, the KPI items of a document are validated one at a time from their
    JSON (:class:`~kpiwatch.config.rules_cache.Entry`): a loaded file of 10,000 KPIs
    then holds about half the memory.
    """
    docs = []
    sharing = Sharing()  # equal parts of KPIs, one instance each
    if cache is not None and fast:
        cache.loading(text for _, text in texts)
    for file, text in texts:
        doc = Doc(file, text)
        entry = cache.cached(text) if cache is not None and fast else None
        fresh = entry is None
        libyaml = fresh and fast and fast_possible(text)
        if libyaml and cache is not None and "${" not in text:
            entry = reused(text, env, cache.held_items)  # a changed file: its other KPIs
        if entry is not None:
            doc.pins = dict(entry.pins or {})
        elif compose(doc, env, problems, fast=libyaml):
            if cache is not None and fast:
                entry = split(text, doc.data)
            if entry is None:
                _validate(doc, problems, sharing)
        if entry is not None:
            doc.data = entry.data  # the KPI items' data is decoded one at a time
            _validate(doc, problems, sharing, entry.kpi_items())
        if fast:
            if problems:
                raise _NotClean
            doc.release()  # problems would come from the careful run: no tree needed
            if cache is not None and fresh and entry is not None:
                if entry.spans is None:  # parsed whole: which items can be reused by text
                    entry = replace(entry, spans=spans_kept(text, entry, doc.pins, env))
                cache.keep(text, entry, doc.pins)  # what a clean load read, positions too
        docs.append(doc)
    return docs


def _validate(
    doc: Doc, problems: list[RuleProblem], sharing: Sharing, kpis: Iterator[Any] | None = None
) -> None:
    """Validate ``doc.data``; with ``kpis``, its KPI items come from there instead, each
    validated on its own as the list of KPIs would validate it."""
    try:
        model = RuleFile.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(translate(doc, exc.errors(include_url=False)))
        _salvage(doc)
        return
    doc.sources = dict(model.sources)
    doc.teams = dict(model.teams)
    if kpis is None:
        doc.kpis = {i: sharing.share(kpi) for i, kpi in enumerate(model.kpis)}
        return
    for index, item in enumerate(kpis):
        try:
            doc.kpis[index] = sharing.share(Kpi.model_validate(item))
        except ValidationError as exc:
            located = exc.errors(include_url=False)
            for error in located:  # where the list of KPIs would have said it is
                error["loc"] = ("kpis", index, *error["loc"])
            problems.extend(translate(doc, located))


def _salvage(doc: Doc) -> None:
    """Keep the items that validate on their own, so cross-file checks still see them."""
    data = doc.data if isinstance(doc.data, dict) else {}
    sources, teams, kpis = data.get("sources"), data.get("teams"), data.get("kpis")
    for name, value in sources.items() if isinstance(sources, dict) else ():
        if isinstance(name, str) and (source := _quietly(_SOURCE_ADAPTER.validate_python, value)):
            doc.sources[name] = source
    for name, value in teams.items() if isinstance(teams, dict) else ():
        if isinstance(name, str) and (team := _quietly(Team.model_validate, value)):
            doc.teams[name] = team
    for index, value in enumerate(kpis) if isinstance(kpis, list) else ():
        if kpi := _quietly(Kpi.model_validate, value):
            doc.kpis[index] = kpi


def _quietly(validate: Any, value: Any) -> Any:
    try:
        return validate(value)
    except ValidationError:
        return None


# ---------------------------------------------------------------- across files


def _assemble(
    docs: list[Doc],
    files: tuple[Path, ...],
    fingerprint: str,
    problems: list[RuleProblem],
    roots: FileRoots | None,
    *,
    fast: bool = False,
    cache: RulesCache | None = None,
) -> LoadedRules:
    problems = problems + cross_check(docs, roots, cache)
    if problems:
        if fast:
            raise _NotClean
        raise RuleLoadError(sorted(problems, key=lambda p: (p.file, p.line, p.column)))
    sources: dict[str, SourceModel] = {}
    teams: dict[str, Team] = {}
    kpis: list[Kpi] = []
    locations: dict[str, Where] = {}
    team_locations: dict[str, Where] = {}
    source_locations: dict[str, Where] = {}
    for doc in docs:
        sources.update(doc.sources)
        teams.update(doc.teams)
        source_locations.update({n: _where(doc, ("sources", n), key=True) for n in doc.sources})
        team_locations.update({n: _where(doc, ("teams", n), key=True) for n in doc.teams})
        for index, kpi in doc.kpis.items():
            kpis.append(kpi)
            locations[kpi.id] = _where(doc, ("kpis", index))
    return LoadedRules(
        rules=RuleSet(sources=sources, teams=teams, kpis=tuple(kpis)),
        files=files,
        locations=locations,
        fingerprint=fingerprint,
        team_locations=team_locations,
        source_locations=source_locations,
        file_roots=roots,
    )


def _where(doc: Doc, path: DocPath, *, key: bool = False) -> Where:
    return (doc.file, *doc.where(path, key=key))
