"""Equal parts of validated rules shared between KPIs, so 10,000 KPIs cost less memory.

Rule files repeat themselves: most KPIs have the same trend rule, escalation, owner
domain, poll interval and set of keys given. Pydantic builds a fresh object for
each, including a ``__pydantic_fields_set__`` set per model (about 700 bytes for a
KPI). :class:`Sharing` replaces equal sub-models, sets, strings and durations with
one instance each. Models are frozen, so nothing can tell a shared part from a copy;
mutable fields (a ``labels`` mapping, a list) are never shared.
"""

from __future__ import annotations

import math
import sys
from datetime import date, time, timedelta
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
_SCALARS = (str, int, float, bool, type(None), date, time, timedelta, Enum)


class Sharing:
    """One instance of each equal value, across every model given to :meth:`share`."""

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        self._models: dict[Any, BaseModel] = {}
        self._shared: set[int] = set()  # ids of the models in _models

    def share(self, model: M) -> M:
        """``model`` with its parts shared; an equal model seen before, if there was one."""
        fields = model.__dict__
        # the key of each field while the model can be shared whole (only scalars and
        # shared models inside); None once it cannot. Keys as _key gives them, made here:
        # this loop runs for every field of every KPI
        keys: list[tuple[str, Any]] | None = []
        shared: Any
        for name, value in fields.items():
            kind = type(value)
            if kind is str:
                if len(value) <= 64:
                    shared = sys.intern(value)
                    if shared is not value:
                        fields[name] = shared  # frozen models refuse setattr, not their __dict__
                key: Any = (str, value)
            elif (what := _KINDS.get(kind) or _classify(kind)) is _SAME:
                key = (kind, value)  # one instance each already
            elif what is _MODEL:
                shared = self.share(value)
                if shared is not value:
                    fields[name] = shared
                if id(shared) not in self._shared:
                    keys = None
                    continue
                key = id(shared)
            elif what is _SCALAR:
                key = _key(value)
                shared = self._values.setdefault(key, value)
                if shared is not value:
                    fields[name] = shared
            else:  # a mapping or list: mutable, kept per model
                keys = None
                continue
            if keys is not None:
                keys.append((name, key))
        given_key = _key(model.__pydantic_fields_set__)
        given = self._values.setdefault(given_key, model.__pydantic_fields_set__)
        object.__setattr__(model, "__pydantic_fields_set__", given)
        if keys is None or model.__pydantic_extra__ or model.__pydantic_private__:
            return model
        found = self._models.setdefault((type(model), tuple(keys), given_key), model)
        self._shared.add(id(found))
        return found  # type: ignore[return-value]  # the key holds its type


# what share() does with a field's value, by its type: looked up once per type (the
# isinstance chain per field was a sixth of a cached load of 10,000 KPIs)
_SAME, _MODEL, _SCALAR, _MUTABLE = "same", "model", "scalar", "mutable"
_KINDS: dict[type, str] = {}


def _classify(kind: type) -> str:
    if kind is bool or kind is type(None) or issubclass(kind, Enum):
        found = _SAME
    elif issubclass(kind, BaseModel):
        found = _MODEL
    elif issubclass(kind, _SCALARS):
        found = _SCALAR
    else:
        found = _MUTABLE  # a mapping or list
    _KINDS[kind] = found
    return found


def _key(value: Any) -> Any:
    """Equal keys for interchangeable values only: 1, 1.0, True and -0.0, 0.0 differ."""
    if isinstance(value, BaseModel):
        return id(value)
    if isinstance(value, set):
        return (frozenset, frozenset(value))
    if isinstance(value, float):
        return (float, value, math.copysign(1.0, value))
    return (type(value), value)
