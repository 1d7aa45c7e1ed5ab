"""The state store, opened and migrated on each backend in turn (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kpiwatch.store import Store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()
