"""Each KPI item of a rule file as a span of its text, so that an edit parses only what
changed (issue 15: one KPI edited in a file of 10,000 took 1.6 s, the whole file parsed).

A rule file written as people write them has its KPIs as a block list under a ``kpis:``
key at the start of a line, each item starting with ``- `` at one indentation.
:func:`kpi_spans` finds those items from the lines alone, and gives up (None) at
anything else. The rules cache keeps each item's data under the SHA-256 of its span;
a file that changed is then read as a *skeleton*, every item the cache holds replaced
by as many empty lines, so that libyaml parses the rest where it is (positions stay
right) and the items the cache holds are not parsed at all.

That is only the same as parsing the whole file when each span is exactly its item's
text. A span is kept only once that is shown:

* from a whole parse (:func:`spans_kept`): the items are as many as the spans and each
  starts on its span's first line, so each of them but the last ends where the next
  span starts; the last, parsed alone, gives the same data;
* from a skeleton (:func:`reused`): each new item, parsed alone, gives the data the
  skeleton gave it; the others were shown before.

In a block list an item's data depends only on its own text: with no alias (a plain
document, :func:`~kpiwatch.config.fast_yaml.plain`) nothing refers to another item.
Anything unusual or different sends the loader to the whole parse.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from kpiwatch.config.fast_yaml import plain
from kpiwatch.config.rules_cache import Entry, Pins, dumps, encode, text_key

# line breaks other than \n (YAML reads \r and \r\n too; str.splitlines more): not split
_OTHER_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e"
_KPIS = re.compile(r"\nkpis:[ ]*(?:#[^\n]*)?\n")
_END = re.compile(r"\n[^ \n#]")  # a line starting in column 0, not a comment
_END_UNINDENTED = re.compile(r"\n(?!- )[^ \n#]")  # and not an item at indentation 0
_FIRST_ITEM = re.compile(r"(?:[ ]*(?:#.*)?\n)*( *)- [ ]*[^ \n#]")


@dataclass(frozen=True, slots=True)
class Spans:
    """Where the KPI items of ``text`` are: each as (start, end) offsets of whole lines."""

    text: str
    items: tuple[tuple[int, int], ...]
    lines: tuple[int, ...]  # the 1-based line each item starts on

    def item(self, index: int) -> str:
        start, end = self.items[index]
        return self.text[start:end]

    def keys(self) -> list[str]:
        return [text_key(self.item(i)) for i in range(len(self.items))]

    def alone(self, index: int) -> str:
        """The item as a document of its own: ``kpis:`` and the item's lines."""
        return "kpis:\n" + self.item(index)

    def skeleton(self, known: set[int]) -> str:
        """The text with each item in ``known`` replaced by as many empty lines."""
        parts: list[str] = []
        at = 0
        for index in sorted(known):
            start, end = self.items[index]
            parts += (self.text[at:start], "\n" * self.text.count("\n", start, end))
            at = end
        parts.append(self.text[at:])
        return "".join(parts)


def kpi_spans(text: str) -> Spans | None:
    """The spans of the KPI items of ``text``; None unless its ``kpis:`` is one block
    list written as people write them (see the module's description)."""
    # patterns start at "\n", not at "^": re tries "^" at every character of the text
    if any(c in text for c in _OTHER_BREAKS):  # str's search: a regex took 30 ms
        return None
    found = [m.end() - 1 for m in _KPIS.finditer("\n" + text)]  # less the "\n" put in front
    if len(found) != 1:
        return None
    region = found[0]  # the line after kpis:
    first = _FIRST_ITEM.match(text, region)
    if first is None:
        return None
    indent = len(first.group(1))
    # the list ends at the first line that starts in column 0 with anything but a
    # comment (or, at indentation 0, an item)
    ending = (_END_UNINDENTED if indent == 0 else _END).search(text, region - 1)
    end = len(text) if ending is None else ending.start() + 1
    if _odd(indent).search(text, region - 1, end):
        return None
    item = re.compile(rf"\n[ ]{{{indent}}}- ")
    starts = [m.start() + 1 for m in item.finditer(text, region - 1, end)]
    if not starts or starts[0] != first.start(1):
        return None
    bounds = [*starts, end]
    lines, line, at = [], text.count("\n", 0, starts[0]) + 1, starts[0]
    for start in starts:
        line += text.count("\n", at, start)
        lines.append(line)
        at = start
    return Spans(text, tuple(pairwise(bounds)), tuple(lines))


@functools.cache
def _odd(indent: int) -> re.Pattern[str]:
    """A line that makes the list at ``indent`` not plain: less indented than its items
    (not a comment), or level with them and not an item."""
    level = rf"[ ]{{{indent}}}(?!- [ ]*[^ \n#])[^ \n#]"
    if indent <= 1:
        return re.compile(rf"\n{level}")
    return re.compile(rf"\n(?:[ ]{{1,{indent - 1}}}[^ \n#]|{level})")


def _item_json(item: Any) -> str | None:
    try:
        return dumps(encode(item))
    except ValueError:
        return None


def _alone_is(spans: Spans, index: int, item_json: str, env: Mapping[str, str]) -> bool:
    """Whether the item parsed on its own gives the data it has in the file."""
    built = plain(spans.alone(index), env)
    if built is None or type(built[0]) is not dict or list(built[0]) != ["kpis"]:
        return False
    alone = built[0]["kpis"]
    return type(alone) is list and len(alone) == 1 and _item_json(alone[0]) == item_json


def spans_kept(
    text: str, entry: Entry, pins: Pins, env: Mapping[str, str]
) -> tuple[tuple[str, int], ...] | None:
    """(the SHA-256 of its span, its column) for each KPI item of a document parsed
    whole, when each span is shown to be exactly its item's text; else None."""
    spans = kpi_spans(text)
    if spans is None or len(spans.items) != len(entry.kpis) or not entry.kpis:
        return None
    columns = []
    for index, line in enumerate(spans.lines):
        pin = pins.get((("kpis", index), False))
        if pin is None or pin[0] != line:
            return None
        columns.append(pin[1])
    if not _alone_is(spans, len(spans.items) - 1, entry.kpis[-1], env):
        return None
    return tuple(zip(spans.keys(), columns, strict=True))


def reused(
    text: str,
    env: Mapping[str, str],
    known: Callable[[list[str]], Mapping[str, tuple[str, int]]],
) -> Entry | None:
    """The entry of a changed file whose KPI items ``known`` holds in part (by the keys
    of their spans: their JSON and column), parsing only the rest; None if it cannot be
    read so, or holds no known item."""
    spans = kpi_spans(text)
    if spans is None:
        return None
    keys = spans.keys()
    held = known(keys)
    old = {i for i, key in enumerate(keys) if key in held}
    if not old:
        return None
    built = plain(spans.skeleton(old), env)
    # the key must be there: text before it that swallowed it (an open quote) is no
    # list of known items, however it parses
    if built is None or type(built[0]) is not dict or "kpis" not in built[0]:
        return None
    data, skeleton_pins = built
    new = [i for i in range(len(keys)) if i not in old]
    items = data.get("kpis")
    if (type(items) is not list or len(items) != len(new)) if new else items is not None:
        return None
    kpis: list[str] = []
    columns: list[int] = []
    pins: Pins = {k: v for k, v in skeleton_pins.items() if k[0][0] != "kpis"}
    fresh = iter(enumerate(items or []))
    for index, (key, line) in enumerate(zip(keys, spans.lines, strict=True)):
        if index in old:
            item_json, column = held[key]
        else:
            at, item = next(fresh)
            pin = skeleton_pins.get((("kpis", at), False))
            found = _item_json(item)
            if pin is None or pin[0] != line or found is None:
                return None
            if not _alone_is(spans, index, found, env):
                return None
            item_json, column = found, pin[1]
        kpis.append(item_json)
        columns.append(column)
        pins[("kpis", index), False] = (line, column)
    rest = {key: value for key, value in data.items() if key != "kpis"}
    try:
        encoded = encode(rest)
    except ValueError:
        return None
    return Entry(rest, tuple(kpis), pins, encoded, tuple(zip(keys, columns, strict=True)))
