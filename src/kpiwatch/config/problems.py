"""Pydantic validation errors turned into located, plainly worded rule problems.

Each error's location is walked through the YAML tree to the node it concerns, so the
problem reads ``file:line:col: path: message``. Messages are reworded for people who
write YAML (``expected a whole number, got 'ten'``), unknown keys and names get a
did-you-mean suggestion, several errors at one node merge into one, echoed values are
shortened and redacted, and errors at nodes with an unresolved ``${...}`` are dropped.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic_core import ErrorDetails

from kpiwatch.config.document import (
    Doc,
    DocPath,
    Segment,
    child_of,
    format_path,
    key_name,
    node_position,
)
from kpiwatch.config.model_types import (
    discriminator_key,
    field_type,
    model_class,
    union_member,
    union_tags,
)
from kpiwatch.config.rules import RuleFile
from kpiwatch.config.written import written
from kpiwatch.errors import RuleProblem, redact

_MAX_MESSAGE = 300  # model checks echo the value; a huge one would bury the message


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
        member = union_member(spot.expected, seg)
        if member is not None:  # pydantic names the union member it tried: not a key
            spot.expected = member
            continue
        if seg == "[key]":
            spot.node = spot.key
            break
        found = child_of(spot.node, seg)
        if found is None:
            spot.rest = list(loc[i:])
            break
        spot.key, spot.node = found
        spot.path.append(seg)
        spot.expected = field_type(spot.expected, seg)
    return spot


def translate(doc: Doc, errors: Sequence[ErrorDetails]) -> list[RuleProblem]:
    """Pydantic errors as located problems; several errors at one node become one."""
    located: dict[tuple[str, int, int], list[str]] = {}
    for error in errors:
        spot = _walk(doc.root, error["loc"])
        target, path, message = _describe(error, spot)
        if target is not None and id(target) in doc.held:
            continue
        line, column = node_position(target)
        located.setdefault((format_path(path), line, column), []).append(message)
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
        return spot.key, path, _unknown_key(key_name(spot.key), _parent_keys(error["loc"]))
    if kind == "missing":
        return spot.node, path, f"missing required key {str(error['loc'][-1])!r}"
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        key = discriminator_key(spot.expected) or str(ctx.get("discriminator", "")).strip("'")
        choices = ", ".join(union_tags(spot.expected, key))
        if kind == "union_tag_not_found":
            return spot.node, path, f"missing key {key!r} (one of {choices})"
        found = child_of(spot.node, key)  # point at the bad tag itself
        node, path = (found[1], (*path, key)) if found else (spot.node, path)
        # ctx's tag is str() of the value: a list of dates would read as Python's repr
        tag = value.get(key, ctx.get("tag")) if isinstance(value, dict) else ctx.get("tag")
        return node, path, f"{_show(tag)} is not one of {choices}"
    if kind in ("value_error", "assertion_error"):
        return _refine(spot, path, _strip_prefix(error["msg"]))
    return spot.node, path, _plain(kind, error["msg"], ctx, value, error["loc"])


def _refine(spot: _Spot, path: DocPath, message: str) -> tuple[yaml.Node | None, DocPath, str]:
    """A model check saying ``thresholds: ...`` points at its key when the key is there."""
    match = re.match(r"(\w+): (.+)", message, re.DOTALL)
    if match and spot.node is not None and (found := child_of(spot.node, match[1])):
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
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    return redact(written(value))


def _unknown_key(key: str, allowed: list[str]) -> str:
    hint = _suggest(key, allowed)
    if not hint and allowed:
        hint = f"; allowed keys: {', '.join(allowed)}"
    return f"unknown key {key!r}{hint}"


def _parent_keys(loc: DocPath) -> list[str]:
    expected: Any = RuleFile
    for seg in loc[:-1]:
        member = union_member(expected, seg)
        expected = member if member is not None else field_type(expected, seg)
    model = model_class(expected)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


# ---------------------------------------------------------------- names


def _suggest(word: str, candidates: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def unknown(kind: str, name: str, candidates: Sequence[str]) -> str:
    hint = _suggest(name, candidates)
    if not hint:
        names = sorted(candidates)
        if not names:
            hint = f" (no {kind}s are declared)"
        else:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            hint = f"; known: {shown}"
    return f"unknown {kind} {name!r}{hint}"
