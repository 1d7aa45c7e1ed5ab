"""Prometheus text exposition lines, written byte for byte as ``prometheus_client``
writes them (label names sorted, values escaped, Go float formatting), so the
exporter can keep and reuse them between scrapes."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_go_float: Callable[[float], str] = floatToGoString  # e.g. 1.5e+07 (untyped upstream)


def escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def line_prefix(name: str, labels: dict[str, str]) -> bytes:
    """A sample line up to its value: ``name{labels} `` (label names sorted, values escaped)."""
    pairs = ",".join(f'{label}="{escape_label(value)}"' for label, value in sorted(labels.items()))
    return f"{name}{{{pairs}}} ".encode() if pairs else f"{name} ".encode()


def line_end(value: float) -> bytes:
    """A sample's value and the end of its line."""
    return (_go_float(value) + "\n").encode()


def sample_line(sample: Sample) -> bytes:
    return line_prefix(sample.name, sample.labels) + line_end(sample.value)
