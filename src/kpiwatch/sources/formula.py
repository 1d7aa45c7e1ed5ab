"""KPIs computed from other KPIs' latest values: ``query: signups / visits * 100``.

A formula is arithmetic only: numbers, KPI ids, ``+ - * / // % **``, unary
minus and plus, parentheses, and the functions min, max, abs and round.
Everything else (attributes, subscripts, comparisons, strings, keywords,
lambdas...) is refused before anything is evaluated, with a reason saying
what is not allowed. All arithmetic is done in floats, so no expression can
build a huge integer; an overflow is a bad value, not a hang.

The result is observed at ``now`` (when it was computed), not at the inputs'
timestamps: inputs may come from sources polled at different times, and the
formula KPI's own staleness is judged by its own ``max_age``.
"""

from __future__ import annotations

import ast
import math
import operator
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from simpleeval import SimpleEval

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError
from kpiwatch.model import Observation
from kpiwatch.sources.base import FetchResult, Latest, is_finite_number


def _float_op(op: Callable[[float, float], float]) -> Callable[[Any, Any], float]:
    return lambda a, b: op(float(a), float(b))


def _power(base: Any, exponent: Any) -> float:
    # math.pow raises OverflowError instead of building a huge number, and
    # ValueError instead of returning a complex for (-8) ** (1/3)
    return math.pow(float(base), float(exponent))


def _round(value: Any, ndigits: Any = 0) -> float:
    return float(round(float(value), int(ndigits)))


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: _float_op(operator.add),
    ast.Sub: _float_op(operator.sub),
    ast.Mult: _float_op(operator.mul),
    ast.Div: _float_op(operator.truediv),
    ast.FloorDiv: _float_op(operator.floordiv),
    ast.Mod: _float_op(operator.mod),
    ast.Pow: _power,
    ast.USub: lambda a: -float(a),
    ast.UAdd: lambda a: +float(a),
}
FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": lambda *args: float(min(float(a) for a in args)),
    "max": lambda *args: float(max(float(a) for a in args)),
    "abs": lambda value: abs(float(value)),
    "round": _round,
}
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Constant)
_DIVISIONS = (ast.Div, ast.FloorDiv, ast.Mod)
_ALLOWED_HINT = (
    "formulas allow numbers, KPI ids, + - * / // % **, parentheses, min, max, abs, round"
)


def parse_formula(expression: str) -> ast.Expression:
    """The checked syntax tree of a formula; ValueError says what is not allowed."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"invalid formula {expression!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.operator | ast.unaryop):
            if type(node) not in OPERATORS:
                raise ValueError(f"operator {type(node).__name__} is not allowed; {_ALLOWED_HINT}")
        elif isinstance(node, ast.expr_context):
            continue
        elif not isinstance(node, _ALLOWED_NODES):
            raise ValueError(f"{_describe_node(node)} is not allowed; {_ALLOWED_HINT}")
        elif isinstance(node, ast.Constant) and not is_finite_number(node.value):
            raise ValueError(f"constant {node.value!r} is not allowed; {_ALLOWED_HINT}")
        elif isinstance(node, ast.Call):
            _check_call(node)
    return tree


def _check_call(node: ast.Call) -> None:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in FUNCTIONS:
        shown = name or _describe_node(node.func)
        raise ValueError(f"function {shown!r} is not allowed; {_ALLOWED_HINT}")
    if node.keywords:
        raise ValueError(f"{name}() takes no keyword arguments here")
    if not node.args:
        raise ValueError(f"{name}() needs at least one argument")


def _describe_node(node: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access ('.')",
        ast.Subscript: "indexing ('[...]')",
        ast.Compare: "comparison",
        ast.BoolOp: "and/or",
        ast.IfExp: "if/else",
        ast.Lambda: "lambda",
    }
    return names.get(type(node), type(node).__name__)


def formula_inputs(tree: ast.Expression) -> frozenset[str]:
    """The KPI ids a checked formula reads (function names excluded)."""
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return frozenset(
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called
    )


class FormulaSource:
    """The builtin ``formula`` source, reading inputs through ``latest(kpi_id)``."""

    name = "formula"

    def __init__(self, latest: Latest) -> None:
        self._latest = latest

    def fetch(self, kpi: rules.Kpi, now: datetime) -> FetchResult:
        """Evaluate the KPI's formula over its inputs' latest values."""
        return self.fetch_with(kpi, now, self._latest)

    def reads(self, kpi: rules.Kpi) -> frozenset[str]:
        try:
            return formula_inputs(parse_formula(kpi.query or ""))
        except ValueError:  # fetch says what is wrong
            return frozenset()

    def fetch_with(self, kpi: rules.Kpi, now: datetime, latest: Latest) -> FetchResult:
        """:meth:`fetch` through ``latest`` (a batch's inputs, read at once)."""
        start = time.perf_counter()
        try:
            tree = parse_formula(kpi.query or "")
        except ValueError as exc:
            raise SourceError(str(exc), source=self.name, kpi=kpi.id) from None
        values = self._inputs(kpi, formula_inputs(tree), latest)
        value = self._evaluate(kpi, tree, values)
        return FetchResult((Observation(kpi.id, now, value),), time.perf_counter() - start)

    def close(self) -> None:
        """Nothing to release."""

    def _inputs(self, kpi: rules.Kpi, names: frozenset[str], latest: Latest) -> dict[str, float]:
        values: dict[str, float] = {}
        missing = []
        for name in sorted(names):
            try:
                observation = latest(name)
            except Exception as exc:  # the store failing is this source failing
                raise SourceError(
                    f"could not read input {name!r}: {exc}", source=self.name, kpi=kpi.id
                ) from exc
            if observation is None:
                missing.append(name)
            elif not is_finite_number(observation.value):
                raise self._bad(kpi, f"input {name!r} is {observation.value!r}")
            else:
                values[name] = float(observation.value)
        if missing:
            noun = "input" if len(missing) == 1 else "inputs"
            verb = "has" if len(missing) == 1 else "have"
            raise self._bad(kpi, f"{noun} {', '.join(map(repr, missing))} {verb} no value yet")
        return values

    def _evaluate(self, kpi: rules.Kpi, tree: ast.Expression, values: dict[str, float]) -> float:
        # a fresh evaluator per call: SimpleEval keeps names on the instance
        evaluator = SimpleEval(operators=OPERATORS, functions=FUNCTIONS, names=values)
        evaluator.nodes = {k: v for k, v in evaluator.nodes.items() if k in _ALLOWED_NODES}
        try:
            result = evaluator.eval(kpi.query, previously_parsed=tree.body)
        except ZeroDivisionError:
            raise self._bad(kpi, _division_reason(tree, values)) from None
        except OverflowError:
            raise self._bad(kpi, "the result is too large") from None
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise self._bad(kpi, f"cannot compute {kpi.query!r}: {exc}") from None
        except Exception as exc:  # simpleeval's own refusals, should any slip through
            raise SourceError(
                f"cannot evaluate {kpi.query!r}: {exc}", source=self.name, kpi=kpi.id
            ) from None
        if not is_finite_number(result):
            raise self._bad(kpi, f"the result {result!r} is not a finite number")
        return float(result)

    def _bad(self, kpi: rules.Kpi, what: str) -> BadValueError:
        return BadValueError(f"formula for {kpi.id!r}: {what}", source=self.name, kpi=kpi.id)


def _division_reason(tree: ast.Expression, values: dict[str, float]) -> str:
    """``division by zero (new_customers is 0)``, naming the zero divisors found."""
    zeros = sorted(
        {
            name.id
            for node in ast.walk(tree)
            if isinstance(node, ast.BinOp) and isinstance(node.op, _DIVISIONS)
            for name in ast.walk(node.right)
            if isinstance(name, ast.Name) and values.get(name.id) == 0
        }
    )
    if not zeros:
        return "division by zero"
    return f"division by zero ({', '.join(f'{name} is 0' for name in zeros)})"
