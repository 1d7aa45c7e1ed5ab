"""PyYAML's pure-Python safe loader as the rules read it: value errors carry their
position, and a document nested too deeply is refused where it gets too deep."""

from __future__ import annotations

import sys
from typing import Any

import yaml

from kpiwatch.config.written import written

# Rule files nest about six levels deep. PyYAML composes by recursion, and its scanner
# slows down quadratically with the depth of flow collections: stop long before either.
MAX_DEPTH = 64


class Constructor(yaml.constructor.SafeConstructor):
    """SafeConstructor whose value errors (a bad date, a bad ``!!int``) carry a position."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_shown(node)}: {_reason(exc)}", node.start_mark
            ) from None
        except (LookupError, AttributeError):  # PyYAML's own slips: `!!int ''`, `!!bool x`
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_shown(node)}", node.start_mark
            ) from None


class Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    Constructor,
    yaml.resolver.Resolver,
):
    """PyYAML's pure-Python SafeLoader with located value errors.

    It also refuses a document nested more than MAX_DEPTH levels deep, where it gets there.
    """

    def __init__(self, text: str) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        Constructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"document is nested more than {MAX_DEPTH} levels deep",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]  # untyped in stubs
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _shown(node: yaml.Node) -> str:
    """``'x' as !!bool``: the value (shortened) and its tag as YAML spells it."""
    tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
    if isinstance(node, yaml.ScalarNode):
        return f"{written(node.value)} as {tag}"
    return f"{'a mapping' if isinstance(node, yaml.MappingNode) else 'a list'} as {tag}"


def _reason(exc: Exception) -> str:
    if "integer string conversion" in str(exc):  # Python's guard against quadratic int()
        return f"a whole number of more than {sys.get_int_max_str_digits():,} digits"
    text = str(exc)  # may echo the value: keep it short
    return text if len(text) <= 120 else text[:117] + "..."
