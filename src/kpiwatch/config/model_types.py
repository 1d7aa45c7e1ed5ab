"""What the rule models expect at a place in a document, read from their type annotations.

Pydantic names an error's location by keys, indexes and union members. These helpers
follow such a location through the annotations of :mod:`kpiwatch.config.rules`:
they unwrap ``Annotated`` and optional types, find the member of a (discriminated)
union pydantic tried, list a union's tags, and give the type expected under a key.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from kpiwatch.config.document import Segment


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


def model_class(tp: Any) -> type[BaseModel] | None:
    tp = _unwrap(tp)
    if get_origin(tp) is None and isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def union_member(tp: Any, seg: Segment) -> Any:
    """The member of a union that pydantic names by ``seg`` (its tag or type name)."""
    discriminator = discriminator_key(tp)
    tp = _unwrap(tp)
    if not _is_union(tp) or not isinstance(seg, str):
        return None
    for member in get_args(tp):
        if getattr(member, "__name__", None) == seg or seg in union_tags(member, discriminator):
            return member
    return None


def discriminator_key(tp: Any) -> str | None:
    """The discriminator key of an ``Annotated[A | B, Field(discriminator=...)]``."""
    while get_origin(tp) is Annotated:
        for meta in get_args(tp)[1:]:
            if isinstance(getattr(meta, "discriminator", None), str):
                return str(meta.discriminator)
        tp = get_args(tp)[0]
    return None


def union_tags(tp: Any, discriminator: str | None) -> list[str]:
    """The values of the discriminator key of a model, or of each member of a union."""
    tp = _unwrap(tp)
    if _is_union(tp):
        return [tag for member in get_args(tp) for tag in union_tags(member, discriminator)]
    model = model_class(tp)
    if model is None or discriminator not in model.model_fields:
        return []
    annotation = model.model_fields[discriminator].annotation
    return [str(v) for v in get_args(annotation)] if get_origin(annotation) is Literal else []


def field_type(tp: Any, seg: Segment) -> Any:
    """The type expected under key or index ``seg`` of a value of type ``tp``."""
    model = model_class(tp)
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
