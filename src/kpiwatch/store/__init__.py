"""The state store: SQLite (embedded) or a server database, behind :class:`Store`."""

from kpiwatch.store.engine import create_store_engine
from kpiwatch.store.lock import InstanceLock
from kpiwatch.store.repository import Store

__all__ = ["InstanceLock", "Store", "create_store_engine"]
