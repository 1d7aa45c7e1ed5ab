"""Load a directory of rule files into one checked :class:`RuleSet`, or report every problem.

Each file is composed with PyYAML (nodes keep their positions), checked for duplicate
keys, interpolated (``${VAR}``), constructed and validated by the models of
:mod:`kpiwatch.config.rules`. Pydantic's error locations are mapped back to YAML nodes,
so every problem reads ``file:line:col: path: message``. Cross-file checks (unique ids,
references, formulas) run last; all problems found are raised together.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from kpiwatch.config.interpolate import interpolate_nodes, locate, position
from kpiwatch.config.rules import (
    BUILTIN_SOURCES,
    CsvSource,
    HttpSource,
    Kpi,
    PrometheusSource,
    RuleFile,
    RuleSet,
    Source,
    SqlSource,
    Team,
)
from kpiwatch.errors import RuleLoadError, RuleProblem, redact

SourceModel = SqlSource | HttpSource | PrometheusSource | CsvSource
Where = tuple[str, int, int]  # file, 1-based line, 1-based column
Segment = str | int
DocPath = tuple[Segment, ...]

_RULE_SUFFIXES = (".yaml", ".yml")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_KEY = re.compile(r"[\w-]+")
_MAX_MESSAGE = 300  # model checks echo the value; a huge one would bury the message
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


def load_rules(rules_dir: Path, env: Mapping[str, str] | None = None) -> LoadedRules:
    """Load every ``*.yaml``/``*.yml`` under ``rules_dir`` (recursively, sorted).

    Raises RuleLoadError listing every problem found, each with file:line:col.
    """
    env = os.environ if env is None else env
    paths = _rule_files(rules_dir)
    digest = hashlib.sha256()
    problems: list[RuleProblem] = []
    docs: list[_Doc] = []
    for path in paths:
        text = _read(path, path.relative_to(rules_dir).as_posix(), digest, problems)
        if text is not None:
            docs.append(_load_document(text, str(path), env, problems))
    return _assemble(docs, tuple(paths), digest.hexdigest(), problems)


def load_rule_text(
    text: str, filename: str = "<string>", env: Mapping[str, str] | None = None
) -> LoadedRules:
    """Load a single rule document given as text (tests, ``kpiwatch test``)."""
    env = os.environ if env is None else env
    problems: list[RuleProblem] = []
    doc = _load_document(text, filename, env, problems)
    fingerprint = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return _assemble([doc], (), fingerprint, problems)


# ---------------------------------------------------------------- files


def _rule_files(rules_dir: Path) -> list[Path]:
    if not rules_dir.is_dir():
        what = "does not exist" if not rules_dir.exists() else "is not a directory"
        raise RuleLoadError([_whole(str(rules_dir), f"rules directory {what}")])
    paths = [
        p
        for p in rules_dir.rglob("*")
        if p.suffix in _RULE_SUFFIXES and p.is_file() and not _hidden(p.relative_to(rules_dir))
    ]
    if not paths:
        raise RuleLoadError(
            [_whole(str(rules_dir), "no rule files (*.yaml, *.yml) in the rules directory")]
        )
    return sorted(paths, key=lambda p: p.relative_to(rules_dir).as_posix())


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


@dataclass
class _Doc:
    """One rule document: its YAML tree, its data and the parts that validated."""

    file: str
    text: str
    root: yaml.Node | None = None
    data: Any = None
    held: set[int] = field(default_factory=set)  # nodes with unresolved ${...}
    sources: dict[str, SourceModel] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    kpis: dict[int, Kpi] = field(default_factory=dict)  # index in kpis: -> model

    def where(self, path: DocPath, *, key: bool = False) -> tuple[int, int]:
        """Line and column of the node at ``path`` (its key with ``key``), or its nearest parent."""
        return _mark(_find(self.root, path, key=key))

    def problem(self, path: DocPath, message: str, *, key: bool = False) -> RuleProblem:
        line, column = self.where(path, key=key)
        return RuleProblem(self.file, line, column, _format_path(path), message)

    def at(self, path: DocPath, *, key: bool = False) -> str:
        """``file:line:col`` of the node at ``path``, for messages naming a second place."""
        line, column = self.where(path, key=key)
        return f"{self.file}:{line}:{column}"


class _Loader(yaml.SafeLoader):
    """SafeLoader whose value errors (a bad date, a bad ``!!int``) carry a position."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r} as {node.tag}: {exc}", node.start_mark
            ) from None


def _load_document(
    text: str, file: str, env: Mapping[str, str], problems: list[RuleProblem]
) -> _Doc:
    doc = _Doc(file, text)
    if _compose(doc, env, problems):
        _validate(doc, problems)
    return doc


def _compose(doc: _Doc, env: Mapping[str, str], problems: list[RuleProblem]) -> bool:
    """Parse, check keys, interpolate and construct; False when the YAML is unusable."""
    try:
        loader = _Loader(doc.text)
    except yaml.YAMLError as exc:  # unprintable characters fail in the reader
        problems.append(_yaml_problem(doc, exc))
        return False
    try:
        doc.root = loader.get_single_node()
        if doc.root is not None:
            problems.extend(_duplicate_keys(doc, doc.root))
            problems.extend(_interpolate(doc, doc.root, env, loader))
            doc.data = loader.construct_document(doc.root)
    except yaml.YAMLError as exc:
        problems.append(_yaml_problem(doc, exc))
        return False
    except RecursionError:
        problems.append(RuleProblem(doc.file, 1, 1, "", "document is nested too deeply"))
        return False
    finally:
        loader.dispose()
    if doc.data is None:  # an empty file, or only comments
        doc.data = {}
    return True


def _yaml_problem(doc: _Doc, exc: yaml.YAMLError) -> RuleProblem:
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = position(doc.text, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return RuleProblem(doc.file, line, column, "", f"{exc.reason}: character #x{char:04x}")
    if not isinstance(exc, yaml.MarkedYAMLError):
        return RuleProblem(doc.file, 1, 1, "", f"invalid YAML: {exc}")
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        message += f" ({exc.context}"
        cm = exc.context_mark
        if cm is not None and (cm.line + 1, cm.column + 1) != (line, column):
            message += f" at line {cm.line + 1}, column {cm.column + 1}"
        message += ")"
    return RuleProblem(doc.file, line, column, "", message)


def _nodes(root: yaml.Node) -> Iterator[tuple[yaml.Node, DocPath]]:
    """Every node with its path, once: aliases share nodes and may even loop."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, DocPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node, path
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in reversed(list(enumerate(node.value))))
        elif isinstance(node, yaml.MappingNode):
            stack.extend((v, (*path, _key_name(k))) for k, v in reversed(node.value))


def _key_name(key: yaml.Node) -> str:
    return str(key.value) if isinstance(key, yaml.ScalarNode) else "?"


def _duplicate_keys(doc: _Doc, root: yaml.Node) -> Iterator[RuleProblem]:
    """PyYAML silently keeps the last of two equal keys; a rule file must not have them."""
    for node, path in _nodes(root):
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            earlier = first.setdefault((key.tag, key.value), key)
            if earlier is not key:
                line, column = _mark(earlier)
                yield RuleProblem(
                    doc.file,
                    *_mark(key),
                    _format_path((*path, key.value)),
                    f"duplicate key {key.value!r} (first at line {line}, column {column})",
                )


def _interpolate(
    doc: _Doc, root: yaml.Node, env: Mapping[str, str], loader: _Loader
) -> Iterator[RuleProblem]:
    paths = {id(node): path for node, path in _nodes(root)}
    for node, unresolved in interpolate_nodes(root, env, loader.resolve):
        doc.held.add(id(node))  # its value is unknown: validation errors there are noise
        line, column = locate(doc.text, node, unresolved)
        path = _format_path(paths.get(id(node), ()))
        yield RuleProblem(doc.file, line, column, path, unresolved.message)


# ---------------------------------------------------------------- validation


def _validate(doc: _Doc, problems: list[RuleProblem]) -> None:
    try:
        model = RuleFile.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(_translate(doc, exc.errors(include_url=False)))
        _salvage(doc)
    else:
        doc.sources = dict(model.sources)
        doc.teams = dict(model.teams)
        doc.kpis = dict(enumerate(model.kpis))


def _salvage(doc: _Doc) -> None:
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


@dataclass
class _Spot:
    """Where a pydantic error location leads in the YAML tree."""

    node: yaml.Node | None  # deepest node reached
    key: yaml.Node | None  # the key node of the last mapping step
    path: list[Segment]  # segments found in the document
    expected: Any  # the type expected at ``node`` (None when unknown)
    rest: list[Segment]  # segments not in the document (a missing key)


def _walk(root: yaml.Node | None, loc: Sequence[Segment]) -> _Spot:
    spot = _Spot(root, None, [], RuleFile, [])
    for i, seg in enumerate(loc):
        member = _union_member(spot.expected, seg)
        if member is not None:  # pydantic names the union member it tried: not a key
            spot.expected = member
            continue
        if seg == "[key]":
            spot.node = spot.key
            break
        found = _child(spot.node, seg)
        if found is None:
            spot.rest = list(loc[i:])
            break
        spot.key, spot.node = found
        spot.path.append(seg)
        spot.expected = _field_type(spot.expected, seg)
    return spot


def _translate(doc: _Doc, errors: Sequence[ErrorDetails]) -> list[RuleProblem]:
    """Pydantic errors as located problems; several errors at one node become one."""
    located: dict[tuple[str, int, int], list[str]] = {}
    for error in errors:
        spot = _walk(doc.root, error["loc"])
        target, path, message = _describe(error, spot)
        if target is not None and id(target) in doc.held:
            continue
        line, column = _mark(target)
        located.setdefault((_format_path(path), line, column), []).append(message)
    return [
        RuleProblem(doc.file, line, column, path, _merge(messages))
        for (path, line, column), messages in located.items()
    ]


def _merge(messages: list[str]) -> str:
    """One message for one node: the members of a union each fail, or several keys miss.

    ``expected a, got x`` and ``expected b, got x`` become ``expected a or b, got x``.
    """
    unique = list(dict.fromkeys(messages))
    if len(unique) == 1:
        return unique[0]
    prefix = "missing required key "
    if all(m.startswith(prefix) for m in unique):
        return f"missing required keys {', '.join(m.removeprefix(prefix) for m in unique)}"
    found = [
        m for m in (re.fullmatch(r"expected (.*), got (.*)", m, re.DOTALL) for m in unique) if m
    ]
    if len(found) == len(unique) and len({m[2] for m in found}) == 1:
        return f"expected {' or '.join(m[1] for m in found)}, got {found[0][2]}"
    return "; ".join(unique)


def _describe(error: ErrorDetails, spot: _Spot) -> tuple[yaml.Node | None, DocPath, str]:
    """The node to point at, its path, and a plain message for one pydantic error."""
    kind, ctx, value = error["type"], error.get("ctx", {}), error["input"]
    path: DocPath = tuple(spot.path)
    if kind == "extra_forbidden" and spot.key is not None:
        return spot.key, path, _unknown_key(_key_name(spot.key), _parent_keys(error["loc"]))
    if kind == "missing":
        return spot.node, path, f"missing required key {str(error['loc'][-1])!r}"
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        key = _discriminator(spot.expected) or str(ctx.get("discriminator", "")).strip("'")
        choices = ", ".join(_tags(spot.expected, key))
        if kind == "union_tag_not_found":
            return spot.node, path, f"missing key {key!r} (one of {choices})"
        found = _child(spot.node, key)  # point at the bad tag itself
        node, path = (found[1], (*path, key)) if found else (spot.node, path)
        return node, path, f"{ctx.get('tag')!r} is not one of {choices}"
    if kind in ("value_error", "assertion_error"):
        return _refine(spot, path, _strip_prefix(error["msg"]))
    return spot.node, path, _plain(kind, error["msg"], ctx, value, error["loc"])


def _refine(spot: _Spot, path: DocPath, message: str) -> tuple[yaml.Node | None, DocPath, str]:
    """A model check saying ``thresholds: ...`` points at its key when the key is there."""
    match = re.match(r"(\w+): (.+)", message, re.DOTALL)
    if match and spot.node is not None and (found := _child(spot.node, match[1])):
        return found[1], (*path, match[1]), match[2]
    return spot.node, path, message


def _strip_prefix(message: str) -> str:
    message = redact(re.sub(r"^(Value error|Assertion failed), ", "", message))
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "a date (YYYY-MM-DD)",
    "time_type": "a time (HH:MM)",
    "time_parsing": "a time (HH:MM)",
    "invalid_key": "text as a key",
}


def _plain(kind: str, msg: str, ctx: Mapping[str, Any], value: Any, loc: DocPath) -> str:
    if kind in ("enum", "literal_error"):
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{_show(value)} is not one of {', '.join(choices)}"
    if kind == "string_pattern_mismatch":
        hint = ": use lowercase letters, digits and _" if loc and loc[-1] == "id" else ""
        return f"{_show(value)} does not match {ctx.get('pattern')}{hint}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(value)}"
    plain = re.sub(r"^(Input|String|Value|List|Dictionary) should ", "must ", msg)
    return f"{plain}, got {_show(value)}" if plain != msg else plain


def _show(value: Any) -> str:
    """A short, secret-free rendering of a YAML value for a message."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    text = repr(value)
    return redact(text if len(text) <= 60 else text[:57] + "...")


def _unknown_key(key: str, allowed: list[str]) -> str:
    hint = _suggest(key, allowed)
    if not hint and allowed:
        hint = f"; allowed keys: {', '.join(allowed)}"
    return f"unknown key {key!r}{hint}"


def _parent_keys(loc: DocPath) -> list[str]:
    expected: Any = RuleFile
    for seg in loc[:-1]:
        member = _union_member(expected, seg)
        expected = member if member is not None else _field_type(expected, seg)
    model = _model(expected)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


# ---------------------------------------------------------------- types and nodes


def _unwrap(tp: Any) -> Any:
    """Drop Annotated[...] and an optional None: what remains is what the YAML must be."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if _is_union(tp):
        members = [m for m in get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _model(tp: Any) -> type[BaseModel] | None:
    tp = _unwrap(tp)
    if get_origin(tp) is None and isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _union_member(tp: Any, seg: Segment) -> Any:
    """The member of a union that pydantic names by ``seg`` (its tag or type name)."""
    discriminator = _discriminator(tp)
    tp = _unwrap(tp)
    if not _is_union(tp) or not isinstance(seg, str):
        return None
    for member in get_args(tp):
        if getattr(member, "__name__", None) == seg or seg in _tags(member, discriminator):
            return member
    return None


def _discriminator(tp: Any) -> str | None:
    """The discriminator key of an ``Annotated[A | B, Field(discriminator=...)]``."""
    while get_origin(tp) is Annotated:
        for meta in get_args(tp)[1:]:
            if isinstance(getattr(meta, "discriminator", None), str):
                return str(meta.discriminator)
        tp = get_args(tp)[0]
    return None


def _tags(tp: Any, discriminator: str | None) -> list[str]:
    """The values of the discriminator key of a model, or of each member of a union."""
    tp = _unwrap(tp)
    if _is_union(tp):
        return [tag for member in get_args(tp) for tag in _tags(member, discriminator)]
    model = _model(tp)
    if model is None or discriminator not in model.model_fields:
        return []
    annotation = model.model_fields[discriminator].annotation
    return [str(v) for v in get_args(annotation)] if get_origin(annotation) is Literal else []


def _field_type(tp: Any, seg: Segment) -> Any:
    """The type expected under key or index ``seg`` of a value of type ``tp``."""
    model = _model(tp)
    if model is not None:
        for name, info in model.model_fields.items():
            if seg in (name, info.alias):
                return info.annotation
        return None
    tp = _unwrap(tp)
    args = get_args(tp)
    if get_origin(tp) in (list, tuple, set, frozenset) and args:
        return args[0]
    if get_origin(tp) is dict and len(args) == 2:
        return args[1]
    return None


def _child(node: yaml.Node | None, seg: Segment) -> tuple[yaml.Node | None, yaml.Node] | None:
    """(key node, value node) under ``seg``; the last of equal keys wins, as in the data."""
    if isinstance(node, yaml.MappingNode):
        for key, value in reversed(node.value):
            if isinstance(key, yaml.ScalarNode) and key.value == str(seg):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int):
        items = node.value
        return (None, items[seg]) if 0 <= seg < len(items) else None
    return None


def _find(root: yaml.Node | None, path: DocPath, *, key: bool = False) -> yaml.Node | None:
    node, key_node = root, None
    for seg in path:
        found = _child(node, seg)
        if found is None:
            return node
        key_node, node = found
    return key_node if key and key_node is not None else node


def _mark(node: yaml.Node | None) -> tuple[int, int]:
    if node is None or node.start_mark is None:
        return 1, 1
    return node.start_mark.line + 1, node.start_mark.column + 1


def _format_path(path: Sequence[Segment]) -> str:
    """``kpis[2].thresholds.red``; an odd key is quoted: ``sources['a b']``."""
    text = ""
    for seg in path:
        if isinstance(seg, int) or not _PLAIN_KEY.fullmatch(seg):
            text += f"[{seg!r}]"
        else:
            text += f".{seg}" if text else seg
    return text


def _suggest(word: str, candidates: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _unknown(kind: str, name: str, candidates: Sequence[str]) -> str:
    hint = _suggest(name, candidates)
    if not hint:
        names = sorted(candidates)
        if not names:
            hint = f" (no {kind}s are declared)"
        else:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            hint = f"; known: {shown}"
    return f"unknown {kind} {name!r}{hint}"


# ---------------------------------------------------------------- across files


def _assemble(
    docs: list[_Doc], files: tuple[Path, ...], fingerprint: str, problems: list[RuleProblem]
) -> LoadedRules:
    problems = problems + _duplicates(docs) + _references(docs) + _formulas(docs)
    if problems:
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
    )


def _where(doc: _Doc, path: DocPath, *, key: bool = False) -> Where:
    return (doc.file, *doc.where(path, key=key))


def _section(doc: _Doc, name: str) -> Any:
    return doc.data.get(name) if isinstance(doc.data, dict) else None


def _raw_names(doc: _Doc, section: str) -> list[str]:
    """Names declared under ``section``, whether or not their items validated."""
    items = _section(doc, section)
    return [n for n in items if isinstance(n, str)] if isinstance(items, dict) else []


def _raw_ids(doc: _Doc) -> list[tuple[int, str]]:
    """(index, id) of every KPI item that has a textual id, valid or not."""
    items = _section(doc, "kpis")
    if not isinstance(items, list):
        return []
    return [
        (i, item["id"])
        for i, item in enumerate(items)
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


def _duplicates(docs: list[_Doc]) -> list[RuleProblem]:
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


def _references(docs: list[_Doc]) -> list[RuleProblem]:
    """Sources, teams and leading KPIs named by KPIs must exist somewhere."""
    sources = sorted({n for d in docs for n in _raw_names(d, "sources")} | set(BUILTIN_SOURCES))
    teams = sorted({n for d in docs for n in _raw_names(d, "teams")})
    ids = sorted({kpi_id for d in docs for _, kpi_id in _raw_ids(d)})
    problems: list[RuleProblem] = []
    for doc in docs:
        for index, kpi in doc.kpis.items():
            if kpi.source not in sources:
                message = _unknown("source", kpi.source, sources)
                problems.append(doc.problem(("kpis", index, "source"), message))
            if kpi.team is not None and kpi.team not in teams:
                message = _unknown("team", kpi.team, teams)
                problems.append(doc.problem(("kpis", index, "team"), message))
            for j, name in enumerate(kpi.leading):
                if name not in ids:
                    message = _unknown("KPI", name, ids)
                    problems.append(doc.problem(("kpis", index, "leading", j), message))
    return problems


def formula_references(expression: str) -> frozenset[str]:
    """The KPI ids a formula reads: its names, except those called as functions.

    Raises SyntaxError (or ValueError for a NUL byte) for a malformed formula.
    """
    tree = ast.parse(expression, mode="eval")
    nodes = list(ast.walk(tree))
    names = {n.id for n in nodes if isinstance(n, ast.Name)}
    called = {n.func.id for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    return frozenset(names - called)


def _formulas(docs: list[_Doc]) -> list[RuleProblem]:
    """Formulas must parse, read existing KPIs and not depend on themselves."""
    ids = sorted({kpi_id for d in docs for _, kpi_id in _raw_ids(d)})
    problems: list[RuleProblem] = []
    graph: dict[str, list[str]] = {}
    query_at: dict[str, tuple[_Doc, int]] = {}
    for doc in docs:
        for index, kpi in doc.kpis.items():
            if kpi.source != "formula" or kpi.id in query_at:
                continue
            query_at[kpi.id] = (doc, index)
            path = ("kpis", index, "query")
            try:
                inputs = formula_references(kpi.query or "")
            except (SyntaxError, ValueError, RecursionError) as exc:
                reason = exc.msg if isinstance(exc, SyntaxError) else str(exc) or "too deep"
                problems.append(doc.problem(path, f"formula does not parse: {reason}"))
                continue
            for name in sorted(inputs - set(ids)):
                problems.append(doc.problem(path, f"formula reads an {_unknown('KPI', name, ids)}"))
            graph[kpi.id] = sorted(inputs)
    for cycle in _cycles(graph):
        doc, index = query_at[cycle[0]]
        message = f"formula cycle: {' -> '.join(cycle)}"
        problems.append(doc.problem(("kpis", index, "query"), message))
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
