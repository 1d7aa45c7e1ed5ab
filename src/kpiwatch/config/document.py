"""One rule document as a YAML node tree, so every problem can say where it is.

:class:`Doc` holds a document's composed YAML tree (nodes keep their line and column),
the data constructed from it and the models that validated. :func:`compose` parses
the text, reports duplicate keys (which PyYAML would silently drop), substitutes
``${VAR}`` references and constructs the data; YAML errors become located problems.
A document nested too deeply or blown up by aliases (a "billion laughs") is refused
before it is constructed.
The small helpers here find a node by its path and render paths as ``kpis[2].id``.
The loader is :mod:`~kpiwatch.config.yaml_loader`'s; a clean file is read through
libyaml by :mod:`~kpiwatch.config.fast_yaml`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from kpiwatch.config.fast_yaml import fast_loader, plain, settle
from kpiwatch.config.interpolate import interpolate_nodes, locate, position
from kpiwatch.config.rules import CsvSource, HttpSource, Kpi, PrometheusSource, SqlSource, Team
from kpiwatch.config.yaml_loader import MAX_DEPTH, Loader
from kpiwatch.errors import RuleProblem

SourceModel = SqlSource | HttpSource | PrometheusSource | CsvSource
Where = tuple[str, int, int]  # file, 1-based line, 1-based column
Segment = str | int
DocPath = tuple[Segment, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_KEY = re.compile(r"[\w-]+")
# Values that aliases (``*name``, ``<<: *name``) may add to a document. A "billion laughs"
# document adds 9**9 from a few lines, and merge keys are copied, not shared.
MAX_ALIASED = 100_000


@dataclass
class Doc:
    """One rule document: its YAML tree, its data and the parts that validated."""

    file: str
    text: str
    root: yaml.Node | None = None
    data: Any = None
    held: set[int] = field(default_factory=set)  # nodes with unresolved ${...}
    sources: dict[str, SourceModel] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    kpis: dict[int, Kpi] = field(default_factory=dict)  # index in kpis: -> model
    pins: dict[tuple[DocPath, bool], tuple[int, int]] = field(default_factory=dict)

    def where(self, path: DocPath, *, key: bool = False) -> tuple[int, int]:
        """Line and column of the node at ``path`` (its key with ``key``), or its nearest parent."""
        if (path, key) in self.pins:
            return self.pins[path, key]
        return node_position(_find(self.root, path, key=key))

    def release(self) -> None:
        """Drop the YAML tree and data of a document that validated, keeping what is used.

        A tree holds a dozen objects per value; dropping each file's as soon as it is
        validated keeps the peak (and so the heap left behind) to one file's. Kept:
        where each KPI, source and team is, and the names and ids cross-checks read.
        """
        for name in self.sources:
            self.pins[("sources", name), True] = self.where(("sources", name), key=True)
        for name in self.teams:
            self.pins[("teams", name), True] = self.where(("teams", name), key=True)
        for index in self.kpis:
            self.pins[("kpis", index), False] = self.where(("kpis", index))
        ids = [{"id": self.kpis[i].id} if i in self.kpis else None for i in range(len(self.kpis))]
        self.data = {
            "sources": dict.fromkeys(self.sources),
            "teams": dict.fromkeys(self.teams),
            "kpis": ids,
        }
        self.root = None

    def problem(self, path: DocPath, message: str, *, key: bool = False) -> RuleProblem:
        line, column = self.where(path, key=key)
        return RuleProblem(self.file, line, column, format_path(path), message)

    def at(self, path: DocPath, *, key: bool = False) -> str:
        """``file:line:col`` of the node at ``path``, for messages naming a second place."""
        line, column = self.where(path, key=key)
        return f"{self.file}:{line}:{column}"


def compose(
    doc: Doc, env: Mapping[str, str], problems: list[RuleProblem], *, fast: bool = False
) -> bool:
    """Parse, check keys, interpolate and construct; False when the YAML is unusable.

    With ``fast``, libyaml parses (about ten times faster than PyYAML's Python parser).
    Its positions and refusals differ in corners (empty scalars, tabs, byte-order
    marks), so only a clean result counts: after any problem, load the document again
    without ``fast`` and report that run's problems.
    """
    if fast and (built := plain(doc.text, env)) is not None:
        doc.data, doc.pins = built
        return True
    try:
        loader = fast_loader(doc.text) if fast else Loader(doc.text)
    except yaml.YAMLError as exc:  # unprintable characters fail in the reader
        problems.append(_yaml_problem(doc, exc))
        return False
    try:
        doc.root = loader.get_single_node()
        if doc.root is not None:
            if fast and settle(doc.root) > MAX_DEPTH:
                problems.append(RuleProblem(doc.file, 1, 1, "", "document is nested too deeply"))
                return False
            # no alias token, no expansion: skip the walk (a tenth of a clean load)
            if "*" in doc.text and (expansion := _alias_expansion(doc, doc.root)):
                problems.append(expansion)
                return False
            problems.extend(_duplicate_keys(doc, doc.root))
            if "$" in doc.text:  # else no reference to substitute
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


def _yaml_problem(doc: Doc, exc: yaml.YAMLError) -> RuleProblem:
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = position(doc.text, exc.position)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return RuleProblem(doc.file, line, column, "", f"{exc.reason}: character #x{char:04x}")
    if not isinstance(exc, yaml.MarkedYAMLError):
        return RuleProblem(doc.file, 1, 1, "", f"invalid YAML: {exc}")
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    worded = _in_words(exc)
    if worded is not None:
        return RuleProblem(doc.file, line, column, "", worded)
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        message += f" ({exc.context}"
        cm = exc.context_mark
        if cm is not None and (cm.line + 1, cm.column + 1) != (line, column):
            message += f" at line {cm.line + 1}, column {cm.column + 1}"
        message += ")"
    return RuleProblem(doc.file, line, column, "", message)


def _in_words(exc: yaml.MarkedYAMLError) -> str | None:
    """The common YAML mistakes said in words, instead of the parser's terms; None for
    the rest (their own message is kept). Indentation is what people get wrong."""
    problem = exc.problem or ""
    start = exc.context_mark
    where = f"line {start.line + 1}, column {start.column + 1}" if start is not None else ""
    if problem.startswith("expected <block end>, but found '<block mapping start>'"):
        return (
            "this line is not lined up with the keys above it: indent it exactly as far "
            f"as the other keys of its item (which starts at {where})"
        )
    if problem.startswith("expected <block end>, but found '<block sequence start>'") or (
        problem.startswith("expected <block end>, but found '-'")
    ):
        return (
            "this list item is indented differently from the list it belongs to: "
            "line its '-' up with the list's other items"
        )
    if problem.startswith("expected <block end>"):
        return (
            "this line is indented less than the block it belongs to "
            f"(which starts at {where}): line it up with its siblings"
        )
    if problem == "mapping values are not allowed here":
        return (
            "unexpected ':' here: a value that contains ': ' must be quoted, and a key "
            "indented more than the key above it is read as part of that key's value"
        )
    if "found character '\\t' that cannot start any token" in problem or (
        problem.startswith("found character '\t'")
    ):
        return "a tab: YAML is indented with spaces only"
    if problem == "could not find expected ':'":
        return f"a key without ':' (or an unclosed quote) in the block starting at {where}"
    return None


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
            stack.extend((v, (*path, key_name(k))) for k, v in reversed(node.value))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _alias_expansion(doc: Doc, root: yaml.Node) -> RuleProblem | None:
    """A problem if aliases would expand the document by more than MAX_ALIASED values.

    Counts each node's size with its aliases expanded, once per node (so in linear
    time), and names the first node found too large; an alias loop counts once.
    """
    # every node once, keys too: the sizes below count keys (counting values only here
    # refused a large document with no alias at all, 10,000 KPIs and a `count(*)`)
    limit = sum(1 for _ in _unique(root)) + MAX_ALIASED
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            on_path.discard(id(node))
            total = 1 + sum(size.get(id(child), 1) for child in _children(node))
            if total > limit:
                path = next((p for n, p in _nodes(root) if n is node), ())
                message = (
                    f"aliases (*name, <<: *name) add more than {MAX_ALIASED:,} values to this "
                    'document (a "billion laughs"?); repeat less through them'
                )
                return RuleProblem(doc.file, *node_position(node), format_path(path), message)
            size[id(node)] = total
        elif id(node) not in size and id(node) not in on_path:
            on_path.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return None


def key_name(key: yaml.Node) -> str:
    return str(key.value) if isinstance(key, yaml.ScalarNode) else "?"


def _duplicate_keys(doc: Doc, root: yaml.Node) -> Iterator[RuleProblem]:
    """PyYAML silently keeps the last of two equal keys; a rule file must not have them."""
    paths: dict[int, DocPath] = {}  # found only when needed: most documents have no duplicate
    for node in _unique(root):
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            earlier = first.setdefault((key.tag, key.value), key)
            if earlier is not key:
                paths = paths or {id(n): path for n, path in _nodes(root)}
                line, column = node_position(earlier)
                yield RuleProblem(
                    doc.file,
                    *node_position(key),
                    format_path((*paths.get(id(node), ()), key.value)),
                    f"duplicate key {key.value!r} (first at line {line}, column {column})",
                )


def _unique(root: yaml.Node) -> Iterator[yaml.Node]:
    """Every node once, in no particular order (aliases share nodes and may loop)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            stack.extend(_children(node))


def _interpolate(
    doc: Doc, root: yaml.Node, env: Mapping[str, str], loader: Loader
) -> Iterator[RuleProblem]:
    unresolved_nodes = interpolate_nodes(root, env, loader.resolve)
    paths = {id(node): path for node, path in _nodes(root)} if unresolved_nodes else {}
    for node, unresolved in unresolved_nodes:
        doc.held.add(id(node))  # its value is unknown: validation errors there are noise
        line, column = locate(doc.text, node, unresolved)
        path = format_path(paths.get(id(node), ()))
        yield RuleProblem(doc.file, line, column, path, unresolved.message)


# ---------------------------------------------------------------- paths


def child_of(node: yaml.Node | None, seg: Segment) -> tuple[yaml.Node | None, yaml.Node] | None:
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
        found = child_of(node, seg)
        if found is None:
            return node
        key_node, node = found
    return key_node if key and key_node is not None else node


def node_position(node: yaml.Node | None) -> tuple[int, int]:
    if node is None or node.start_mark is None:
        return 1, 1
    return node.start_mark.line + 1, node.start_mark.column + 1


def format_path(path: Sequence[Segment]) -> str:
    """``kpis[2].thresholds.red``; an odd key is quoted: ``sources['a b']``."""
    text = ""
    for seg in path:
        if isinstance(seg, int) or not _PLAIN_KEY.fullmatch(seg):
            text += f"[{seg!r}]"
        else:
            text += f".{seg}" if text else seg
    return text
