"""``${VAR}`` substitution in rule files, done on the scalars of the composed YAML tree.

Substituting in scalar nodes (not in the raw text) means a variable's value can never
change the document's structure, and every node keeps its position for error messages.
A plain (unquoted) scalar gets its YAML type again after substitution, so
``for: ${N:-2}`` is the number 2 while ``name: "${N:-2}"`` stays text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import yaml

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DEFAULT = r"(?:[^${}]|\$(?!\{))*"  # anything but a nested ${...}
_REFERENCE = re.compile(
    r"\$\$\{"  # escaped: stands for a literal ${
    rf"|\$\{{(?P<name>{_NAME})(?P<fallback>:-(?P<default>{_DEFAULT}))?\}}"
    r"|\$\{"  # any other ${ is malformed
)

Resolve = Callable[[type[yaml.Node], str, tuple[bool, bool]], str]


@dataclass(frozen=True)
class Unresolved:
    """A reference that could not be substituted; it stays in the value as written."""

    occurrence: int  # how many identical tokens precede it in the value
    token: str  # the reference as written, to find it in the source text
    message: str


def interpolate(value: str, env: Mapping[str, str]) -> tuple[str, list[Unresolved]]:
    """Substitute ``${VAR}``, ``${VAR:-default}`` and ``$${`` in one string.

    ``${VAR:-default}`` uses the default when VAR is unset or empty (as in a shell).
    Returns the new text and the references that could not be resolved.
    """
    unresolved: list[Unresolved] = []

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        name = match.group("name")
        if name is None:
            unresolved.append(Unresolved(value.count(token, 0, match.start()), token, _MALFORMED))
            return token
        found = env.get(name)
        if match.group("fallback") is not None and not found:
            return match.group("default")
        if found is None:
            unresolved.append(
                Unresolved(value.count(token, 0, match.start()), token, _missing(name))
            )
            return token
        return found

    return _REFERENCE.sub(replace, value), unresolved


_MALFORMED = (
    "malformed variable reference: write ${NAME} or ${NAME:-default}, or $${ for a literal ${"
)


def _missing(name: str) -> str:
    return f"environment variable {name} is not set (give a default with ${{{name}:-value}})"


def interpolate_nodes(
    root: yaml.Node, env: Mapping[str, str], resolve: Resolve
) -> list[tuple[yaml.ScalarNode, Unresolved]]:
    """Substitute in every scalar value under ``root`` in place; keys stay as written.

    ``resolve`` is the loader's implicit-tag resolver, used to retype plain scalars.
    Returns each unresolved reference with the node holding it.
    """
    problems: list[tuple[yaml.ScalarNode, Unresolved]] = []
    for node in _value_scalars(root):
        if "$" not in node.value:
            continue
        implicit = node.style is None and node.tag == resolve(
            yaml.ScalarNode, node.value, (True, False)
        )
        node.value, unresolved = interpolate(node.value, env)
        if implicit:
            node.tag = resolve(yaml.ScalarNode, node.value, (True, False))
        problems.extend((node, u) for u in unresolved)
    return problems


def _value_scalars(root: yaml.Node) -> Iterator[yaml.ScalarNode]:
    """Each scalar that is not a mapping key, once (aliases share nodes and may loop)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            yield node
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            stack.extend(value for _, value in reversed(node.value))


def locate(text: str, node: yaml.Node, problem: Unresolved) -> tuple[int, int]:
    """The 1-based line and column of a reference in the source text.

    Finds the same occurrence of the token inside the node's source span; falls back to
    the node's start when escapes in a quoted scalar make the span differ from the value.
    """
    start, end = node.start_mark.index, node.end_mark.index
    index = start - 1
    for _ in range(problem.occurrence + 1):
        index = text.find(problem.token, index + 1, end)
        if index < 0:
            return node.start_mark.line + 1, node.start_mark.column + 1
    return position(text, index)


def position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index."""
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1
