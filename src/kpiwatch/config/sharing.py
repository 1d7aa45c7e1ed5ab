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
        whole = True  # only scalars and shared models inside: the model itself can be shared
        for name, value in fields.items():
            if isinstance(value, BaseModel):
                shared = self.share(value)
                whole = whole and id(shared) in self._shared
            elif isinstance(value, _SCALARS):
                shared = self._value(value)
            else:  # a mapping or list: mutable, kept per model
                whole = False
                continue
            if shared is not value:
                fields[name] = shared  # frozen models refuse setattr, not their __dict__
        given = model.__pydantic_fields_set__
        object.__setattr__(model, "__pydantic_fields_set__", self._value(given))
        if not whole or model.__pydantic_extra__ or model.__pydantic_private__:
            return model
        key = (type(model), tuple((k, _key(v)) for k, v in fields.items()), _key(given))
        found = self._models.setdefault(key, model)
        self._shared.add(id(found))
        return found  # type: ignore[return-value]  # the key holds its type

    def _value(self, value: Any) -> Any:
        if type(value) is str:  # not a str enum
            return sys.intern(value) if len(value) <= 64 else value
        return self._values.setdefault(_key(value), value)


def _key(value: Any) -> Any:
    """Equal keys for interchangeable values only: 1, 1.0, True and -0.0, 0.0 differ."""
    if isinstance(value, BaseModel):
        return id(value)
    if isinstance(value, set):
        return (frozenset, frozenset(value))
    if isinstance(value, float):
        return (float, value, math.copysign(1.0, value))
    return (type(value), value)
