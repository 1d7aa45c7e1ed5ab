"""Rule files read through libyaml, about ten times faster than PyYAML's Python parser.

:func:`plain` builds a clean document's data straight from libyaml's events; anything
unusual (or any problem) sends :func:`~kpiwatch.config.document.compose` back to the
careful way, which reports exactly as before. :func:`fast_loader` and :func:`settle`
let the careful way compose with libyaml where it reads as PyYAML does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from kpiwatch.config.interpolate import interpolate
from kpiwatch.config.yaml_loader import MAX_DEPTH, Constructor, Loader

if TYPE_CHECKING:
    from kpiwatch.config.document import DocPath

# libyaml reads these differently from PyYAML: tabs, byte-order marks, Unicode line
# breaks, tags (a bare ``!``), and lone surrogates not at all (it reads UTF-8)
_NOT_FAST = re.compile(r"[\t\ufeff\x85\u2028\u2029\ud800-\udfff]")
_A_TAG = re.compile(r"(?:^|[\s\[{,])!")


def fast_possible(text: str) -> bool:
    """Whether libyaml is there and reads ``text`` as PyYAML's Python parser would."""
    # two searches: one pattern with both took 0.19 s over 10,000 KPIs, these 0.01 s
    return (
        yaml.__with_libyaml__
        and not _NOT_FAST.search(text)
        and not ("!" in text and _A_TAG.search(text))
    )


def fast_loader(text: str) -> Loader:
    return _fast_class()(text)  # type: ignore[no-any-return]  # Loader's interface, in C


@functools.cache
def _fast_class() -> Any:
    from yaml._yaml import CParser

    resolve = yaml.resolver.Resolver.resolve

    class FastLoader(CParser, Constructor, yaml.resolver.Resolver):
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            Constructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._tags: dict[tuple[str, tuple[bool, bool]], str] = {}

        def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
            """The tag, remembered per scalar text: rule files repeat their keys and many
            values, and the resolver's regular expressions were a fifth of composing."""
            if kind is not yaml.ScalarNode:
                return resolve(self, kind, value, implicit)  # type: ignore[no-untyped-call,no-any-return]
            tag = self._tags.get((value, implicit))
            if tag is None:
                tag = resolve(self, kind, value, implicit)  # type: ignore[no-untyped-call]
                self._tags[value, implicit] = tag
            return tag

    return FastLoader


class _Unusual(Exception):
    """Not a document of plain mappings, lists and scalars: construct it the general way."""


_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = _TAG + "str", _TAG + "map", _TAG + "seq"


def plain(
    text: str, env: Mapping[str, str]
) -> tuple[Any, dict[tuple[DocPath, bool], tuple[int, int]]] | None:
    """The data of a plain document built straight from libyaml's events, and where each
    KPI, source and team is (``Doc.pins``); None if it is not one.

    Plain: one document of mappings, lists and scalars, no alias, no merge key, no
    duplicate key, no tag but str, int, float, bool, null and timestamp, nested at most
    MAX_DEPTH deep, every ``${VAR}`` resolved, every value readable. Rule files are:
    for them this does in one pass, with no node tree, what
    :func:`~kpiwatch.config.document.compose` does in six
    (compose, depth, aliases, duplicate keys, ``${VAR}``, construct). The data is the
    same: tags are resolved as the composer resolves them, values substituted as
    :func:`~kpiwatch.config.interpolate.interpolate_nodes` does and made by the same
    constructor methods. The tree of one file of 10,000 KPIs took over 100 MB; what
    is kept instead is the position of each KPI, source and team (``doc.pins``), all
    a clean load reports. Anything else returns None and
    :func:`~kpiwatch.config.document.compose` parses
    again, checks, reports and constructs.
    """
    loader = fast_loader(text)
    pins: dict[tuple[DocPath, bool], tuple[int, int]] = {}
    try:
        data = _plain_events(loader, env, pins)
    except Exception:  # _Unusual, a YAML error, a value its constructor refuses: the
        return None  # general way finds it again and words it
    finally:
        loader.dispose()
    return ({} if data is None else data), pins  # None: an empty file, or only comments


def _plain_events(
    loader: Any, env: Mapping[str, str], pins: dict[tuple[DocPath, bool], tuple[int, int]]
) -> Any:
    """The data of a plain document read from ``loader``'s events, or _Unusual."""
    scalars = {
        _TAG + "null": loader.construct_yaml_null,
        _TAG + "bool": loader.construct_yaml_bool,
        _TAG + "int": loader.construct_yaml_int,
        _TAG + "float": loader.construct_yaml_float,
        _TAG + "timestamp": loader.construct_yaml_timestamp,
    }
    get, resolve = loader.get_event, loader.resolve
    scalar_event, mapping_start, mapping_end = (
        yaml.ScalarEvent,
        yaml.MappingStartEvent,
        yaml.MappingEndEvent,
    )
    sequence_start, sequence_end = yaml.SequenceStartEvent, yaml.SequenceEndEvent

    # where each source and team (its key) and each KPI (its item) starts
    sections: dict[str, list[tuple[Any, Any]]] = {"sources": [], "teams": [], "kpis": []}

    def section(depth: int, key: Any) -> Any:
        return sections.get(key) if depth == 1 and type(key) is str else None

    def scalar(event: Any, is_key: bool) -> Any:
        tag, value = event.tag, event.value
        if tag is None or tag == "!":
            tag = resolve(yaml.ScalarNode, value, event.implicit)
        if not is_key and "$" in value:
            node = _substituted(yaml.ScalarNode(tag, value, event.start_mark, event.end_mark,
                                                event.style), env, resolve)  # fmt: skip
            tag, value = node.tag, node.value
        if tag == _STR:
            return value
        make = scalars.get(tag)
        if make is None:
            raise _Unusual
        return make(yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style))

    def build(event: Any, depth: int, found: Any = None) -> Any:
        """The value starting at ``event``; ``found`` gets (key or index, position) of
        each of its items."""
        kind = type(event)
        if kind is scalar_event:
            return scalar(event, False)
        if depth > MAX_DEPTH or kind is yaml.AliasEvent:
            raise _Unusual
        tag = event.tag
        if kind is mapping_start:
            if tag is not None and tag != "!" and tag != _MAP:
                raise _Unusual
            data: dict[Any, Any] = {}
            pairs = 0
            while type(event := get()) is not mapping_end:
                if type(event) is not scalar_event:  # a key that is a mapping, list or alias
                    raise _Unusual
                key = scalar(event, True)  # a merge key (<<) is _Unusual there
                if found is not None:
                    found.append((key, event.start_mark))
                data[key] = build(get(), depth + 1, section(depth, key))
                pairs += 1
            if len(data) != pairs:  # equal keys: duplicates, or 1 and 0x1
                raise _Unusual
            return data
        if kind is sequence_start:
            if tag is not None and tag != "!" and tag != _SEQ:
                raise _Unusual
            items: list[Any] = []
            while type(event := get()) is not sequence_end:
                if found is not None:
                    found.append((len(items), event.start_mark))
                items.append(build(event, depth + 1))
            return items
        raise _Unusual  # not an event a value starts with

    get()  # the stream's start
    event = get()
    if type(event) is yaml.StreamEndEvent:
        return None
    data = build(get(), 1)  # after the document's start
    get()  # its end
    if type(get()) is not yaml.StreamEndEvent:  # a second document: the composer refuses it
        raise _Unusual
    for name, is_key in (("sources", True), ("teams", True), ("kpis", False)):
        for item, mark in sections[name]:
            pins[(name, item), is_key] = (mark.line + 1, mark.column + 1)
    return data


def _substituted(node: yaml.ScalarNode, env: Mapping[str, str], resolve: Any) -> yaml.ScalarNode:
    """A copy of ``node`` with ``${VAR}`` substituted and, if plain, retyped (as
    :func:`~kpiwatch.config.interpolate.interpolate_nodes` does in place); _Unusual
    when a reference cannot be resolved."""
    text, unresolved = interpolate(node.value, env)
    if unresolved:
        raise _Unusual
    tag = node.tag
    if not node.style and tag == resolve(yaml.ScalarNode, node.value, (True, False)):
        tag = resolve(yaml.ScalarNode, text, (True, False))  # libyaml's plain style is ""
    return yaml.ScalarNode(tag, text, node.start_mark, node.end_mark, node.style)


def settle(root: yaml.Node) -> int:
    """Make libyaml's tree read like PyYAML's (plain style None, not ""); its depth."""
    deepest = 0
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        deepest = max(deepest, depth)
        if isinstance(node, yaml.ScalarNode):
            node.style = node.style or None
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((item, depth + 1) for pair in node.value for item in pair)
    return deepest
