"""What a clean load of a rules directory found, kept to make the next start fast.

Reading 10,000 KPIs costs seconds in two places that give the same answer as long as
the files do: parsing the YAML, and checking each SQL query with sqlglot. After a clean
load the loader writes, per rules directory, one JSON file (never a pickle: reading it
runs no code) holding

* for each rule file with no ``${`` in it: the data constructed from its YAML and
  where each KPI, source and team is, under the SHA-256 of its text. Files with
  ``${VAR}`` are left out: their data depends on the environment, and may hold secrets;
* the SHA-256 of each (dialect, query) the statement check accepted;
* for each KPI item, the SHA-256 of its span of the file's text, when that span is
  shown to be exactly the item (:mod:`~kpiwatch.config.kpi_spans`): a file that
  changed is then parsed without the items the cache holds by their text.

Each KPI item is kept as a JSON text of its own (an :class:`Entry`), and the loader
decodes and validates them one at a time, on a fresh load too. The strings a validated
KPI keeps are allocated among the dicts its data was decoded into; with a whole
document decoded at once, those strings pin the pages of all the freed dicts around
them. One at a time, each KPI's scratch space is reused by the next: validating a cached
file of 10,000 KPIs then leaves 19 MiB behind instead of 55 MiB.

The next load takes a file's data from here instead of parsing it, and skips the check
of an accepted query; everything else runs as always (validation by the models, the
other cross-file checks, the CSV paths against the file system), so what is loaded is
the same. Such a query is vouched for to the check before every fetch
(:func:`kpiwatch.sources.sql_guard.vouch`), which then does not parse it either: a file
only this user can write is as trusted as the process itself.

It is an optimisation only. A file written by another version of kpiwatch, Python,
PyYAML or sqlglot, one that does not parse or is not the shape written here, or one not
owned by this user or writable by others, is ignored (and replaced after the next
clean load). Any problem found in a load that used it sends the loader back to the
careful way, which reads every file again and reports exactly as without a cache.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kpiwatch import __version__

FORMAT = 4  # 2: each KPI item its own JSON text; 3: and the key of its span; 4: the
# statement check refuses set_config(), so queries accepted before are checked again
_MARK = "\x00"  # starts the one key of an object that stands for a non-JSON value
_DATE, _DATETIME, _PAIRS = _MARK + "date", _MARK + "datetime", _MARK + "pairs"

Pins = dict[tuple[tuple[str | int, ...], bool], tuple[int, int]]
_Read = tuple[dict[str, str], frozenset[str], str | None]  # documents, queries, sqlglot
Check = Callable[[str, str | None], str | None]  # the statement check: why not, or None


def _versions() -> dict[str, str]:
    """What the cached documents depend on; any difference ignores the whole file."""
    libyaml = "none"
    if yaml.__with_libyaml__:
        from yaml import _yaml

        libyaml = _yaml.get_version_string()
    return {
        "kpiwatch": __version__,
        "python": sys.version,
        "pyyaml": yaml.__version__,
        "libyaml": libyaml,
    }


@functools.cache
def _sqlglot() -> str | None:
    """The version of sqlglot that checks the queries, None when it is not installed;
    from its metadata, not its module: sqlglot is imported only when a query must be
    parsed (:func:`kpiwatch.sources.sql_guard.statement_problem`), and a load whose
    queries this cache vouches for never imports it."""
    try:
        return importlib.metadata.version("sqlglot")
    except importlib.metadata.PackageNotFoundError:
        return None


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def statement_key(query: str, dialect: str | None) -> str:
    what = f"{dialect or ''}\0{query}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(what).hexdigest()


class Damaged(Exception):
    """A cache entry turned out not to be what this cache writes (found late: each KPI
    item is decoded only as it is validated)."""


@dataclass(frozen=True)
class Entry:
    """One document's data split for validation: everything but its KPI items, and each
    KPI item as JSON, decoded one at a time (see the module's description)."""

    data: dict[str, Any]  # the document without "kpis"
    kpis: tuple[str, ...]
    pins: Pins | None = None  # where its items are (from the cache; a fresh load has its own)
    encoded: Any = None  # ``data`` as JSON holds it, to write (a fresh load's only)
    # per KPI item, the SHA-256 of its span of the text and its column, when each span
    # is shown to be exactly its item (config/kpi_spans.py): a changed file reuses them
    spans: tuple[tuple[str, int], ...] | None = None

    def kpi_items(self) -> Iterator[Any]:
        for text in self.kpis:
            try:
                yield decode(text)
            except Exception as exc:  # not what this cache writes
                raise Damaged(str(exc)) from exc


def split(text: str, data: Any) -> Entry | None:
    """A freshly read document's entry, or None when it is not kept (``${...}``, data
    JSON cannot hold) or its KPIs are not a list to split: validate it whole."""
    if "${" in text or type(data) is not dict or type(data.get("kpis", [])) is not list:
        return None
    rest = {key: value for key, value in data.items() if key != "kpis"}
    try:
        encoded = encode(rest)
        kpis = tuple(dumps(encode(item)) for item in data.get("kpis", []))
    except ValueError:
        return None
    return Entry(rest, kpis, encoded=encoded)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class RulesCache:
    """One rules directory's cache: what was read from its file, and what to write."""

    path: Path
    documents: Mapping[str, str] = field(default_factory=dict)  # text key -> JSON
    statements: frozenset[str] = frozenset()
    statements_by: str | None = None  # the version of sqlglot that accepted them
    # for the next file: each document of this load (encoded), and the accepted queries
    written: dict[str, str] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    _items: dict[str, tuple[str, int]] | None = None  # span key -> (item JSON, column)
    _loading: dict[str, str] = field(default_factory=dict)  # this load's texts -> their keys

    @classmethod
    def open(cls, cache_dir: Path, rules_dir: Path) -> RulesCache:
        """The cache of ``rules_dir`` in ``cache_dir``; empty when there is none to trust."""
        name = hashlib.sha256(os.fsencode(rules_dir.resolve())).hexdigest()[:32]
        cache = cls(cache_dir / f"rules-{name}.json")
        with contextlib.suppress(Exception):  # an optimisation only: anything odd, no cache
            cache.documents, cache.statements, cache.statements_by = _read(cache.path)
        return cache

    def loading(self, texts: Iterable[str]) -> None:
        """The texts of this load: the spans of their cached documents are not indexed
        (those files are unchanged), only the others' (an edited file's old version)."""
        self._loading = {text: text_key(text) for text in texts if "${" not in text}

    def cached(self, text: str) -> Entry | None:
        """The entry of a file with this text, if cached (and kept again)."""
        if "${" in text:
            return None
        key = self._loading.get(text) or text_key(text)
        entry = self.documents.get(key)
        if entry is None:
            return None
        try:
            found = _entry(entry)
        except Exception:  # not what this cache writes: read the file
            return None
        self.written[key] = entry
        return found

    def keep(self, text: str, entry: Entry, pins: Pins) -> None:
        """Write this freshly read document (:func:`split`) next time, with its positions."""
        self.written[text_key(text)] = dumps(
            {
                "data": entry.encoded,
                "kpis": list(entry.kpis),
                "pins": [[s, n, k, *p] for ((s, n), k), p in pins.items()],
                "spans": [list(span) for span in entry.spans or ()],
            }
        )

    def held_items(self, keys: list[str]) -> dict[str, tuple[str, int]]:
        """Of the spans ``keys``, those a cached document holds: each one's KPI item (its
        JSON) and column. The index is built on the first call (a changed file's; an
        unchanged load never needs it), of the documents this load does not use whole."""
        if self._items is None:
            self._items = {}
            unchanged = set(self._loading.values())
            for key, text in self.documents.items():
                if key in unchanged:
                    continue
                with contextlib.suppress(Exception):  # not what this cache writes: none
                    document = json.loads(text)
                    kpis, spans = document["kpis"], document["spans"]
                    if type(kpis) is list and type(spans) is list and len(kpis) == len(spans):
                        for item, (key, column) in zip(kpis, spans, strict=True):
                            if type(item) is str and type(key) is str and type(column) is int:
                                self._items[key] = (item, column)
        return {key: found for key in keys if (found := self._items.get(key)) is not None}

    def forget(self) -> None:
        """Use none of the documents read (one was damaged); write them all anew."""
        self.documents = {}
        self.written.clear()
        self._items = {}

    def statement_check(
        self, check: Check, vouch: Callable[[str, str | None], None] | None = None
    ) -> Check:
        """``check`` that skips the queries this cache holds as accepted by this sqlglot
        (passing each to ``vouch``), and notes every query accepted, to be written."""
        known = self.statements if self.statements_by == _sqlglot() else frozenset()
        accepted = self.accepted

        def checked(query: str, dialect: str | None) -> str | None:
            key = statement_key(query, dialect)
            if key in known:
                accepted.add(key)
                if vouch is not None:
                    vouch(query, dialect)
                return None
            reason = check(query, dialect)
            if reason is None:
                accepted.add(key)
            return reason

        return checked

    def save(self) -> None:
        """Write the cache if this load found anything it did not hold; never fails."""
        same_documents = set(self.written) == set(self.documents)
        same_statements = self.accepted <= self.statements and (
            not self.accepted or self.statements_by == _sqlglot()
        )
        if same_documents and same_statements:
            return
        with contextlib.suppress(OSError, ValueError):
            _write(self.path, self.written, self.accepted)


def _read(path: Path) -> _Read:
    nothing: _Read = ({}, frozenset(), None)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return nothing
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        # written by someone else, or writable by others: not trusted (a forged file
        # could only change rules that are then still validated, but it is not ours)
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return nothing
        if not stat.S_ISREG(info.st_mode):
            return nothing
        whole = json.loads(file.read().decode("utf-8"))
    if whole["format"] != FORMAT or whole["versions"] != _versions():
        return nothing
    documents = whole["documents"]  # each a JSON text, read when its file is loaded
    statements = frozenset(whole["statements"])
    statements_by = whole["sqlglot"]
    if (
        not all(type(k) is str and type(v) is str for k, v in documents.items())
        or not all(type(s) is str for s in statements)
        or type(statements_by) not in (str, type(None))
    ):
        raise ValueError("not what this cache writes")
    return documents, statements, statements_by


def _entry(text: str) -> Entry:
    """One file's entry as written by :meth:`RulesCache.keep`; ValueError (or another
    exception) for anything this cache does not write. Its KPI items are checked as they
    are decoded (:class:`Damaged`)."""
    document = _DECODER.decode(text)
    data, kpis = document["data"], document["kpis"]
    if type(data) is not dict or "kpis" in data:
        raise ValueError("not a document this cache writes")
    if type(kpis) is not list or not all(type(item) is str for item in kpis):
        raise ValueError("not KPI items this cache writes")
    pins: Pins = {}
    for section, name, is_key, line, column in document["pins"]:
        if (section, type(name), is_key) not in _PIN_KINDS:
            raise ValueError("not a position this cache writes")
        if type(line) is not int or type(column) is not int:
            raise ValueError("not a position this cache writes")
        pins[(section, name), is_key] = (line, column)
    spans = document["spans"]
    if type(spans) is not list or not all(
        type(span) is list and len(span) == 2 and type(span[0]) is str and type(span[1]) is int
        for span in spans
    ):
        raise ValueError("not spans this cache writes")
    return Entry(data, tuple(kpis), pins, spans=tuple((k, c) for k, c in spans) or None)


_PIN_KINDS = {("sources", str, True), ("teams", str, True), ("kpis", int, False)}


def _write(path: Path, documents: Mapping[str, str], statements: Iterable[str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    head = json.dumps({"format": FORMAT, "versions": _versions(), "sqlglot": _sqlglot(),
                       "statements": sorted(statements)})  # fmt: skip
    text = head[:-1] + ',"documents":' + json.dumps(documents, ensure_ascii=False) + "}"
    fd, temporary = tempfile.mkstemp(prefix=".rules-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:  # mkstemp: mode 0600
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def encode(value: Any) -> Any:
    """``value`` (data constructed from YAML) as JSON can hold it, to :func:`decode` exactly.

    Dates and times become ``{"\\0date": ...}``, ``{"\\0datetime": ...}``; a mapping with
    a key that is not text (or starts with NUL) becomes ``{"\\0pairs": [[k, v], ...]}``.
    Floats keep their sign and NaN/infinity (Python's JSON writes and reads them).
    """
    kind = type(value)
    if kind is dict:
        if all(type(k) is str and not k.startswith(_MARK) for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {_PAIRS: [[encode(k), encode(v)] for k, v in value.items()]}
    if kind is list:
        return [encode(v) for v in value]
    if kind in (str, int, float, bool) or value is None:
        return value
    if kind is dt.datetime:
        return {_DATETIME: value.isoformat()}
    if kind is dt.date:
        return {_DATE: value.isoformat()}
    raise ValueError(f"cannot keep a {kind.__name__} in the rules cache")


def _decode_object(obj: dict[str, Any]) -> Any:
    if len(obj) != 1:
        return obj
    ((key, value),) = obj.items()
    if not key.startswith(_MARK):
        return obj
    if key == _DATE:
        return dt.date.fromisoformat(value)
    if key == _DATETIME:
        return dt.datetime.fromisoformat(value)
    if key == _PAIRS:
        return dict(value)
    raise ValueError(f"unknown value {key!r} in the rules cache")


# one decoder for every item: json.loads(..., object_hook=) builds a new one per call
_DECODER = json.JSONDecoder(object_hook=_decode_object)


def decode(text: str) -> Any:
    """What :func:`encode` gave, read back from its JSON text."""
    return _DECODER.decode(text)
