"""Who does which piece of work when several replicas share one database.

Each replica runs the same schedule; before a piece of work (a KPI's due
evaluation, a review tick, a digest) it claims the work's lease for that due
time. The first replica to claim it does the work and marks the slot done; the
others skip it. A claim outlives a crash only until it expires, after which
:meth:`Leases.abandoned` hands the unfinished work to whoever asks.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

import structlog

from kpiwatch.errors import StoreError
from kpiwatch.store.leases import Claim, LeaseBook

log = structlog.get_logger("kpiwatch.leases")


def replica_id() -> str:
    """This process's name in the leases table: host, pid and a random part
    (a restarted process on the same host may get the same pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    """Claims made in one replica's name."""

    def __init__(self, book: LeaseBook, holder: str, ttl: timedelta) -> None:
        self._book = book
        self.holder = holder
        self.ttl = ttl
        self._working: Counter[str] = Counter()  # claims whose work is going on now
        self._guard = threading.Lock()

    @contextmanager
    def renewing(self, claims: Sequence[Claim]) -> Iterator[None]:
        """While the block runs, :meth:`renew` keeps ``claims`` from expiring: a batch
        may take longer than a lease, and only a dead replica's claims should expire."""
        names = [claim.name for claim in claims]
        with self._guard:
            self._working.update(names)
        try:
            yield
        finally:
            with self._guard:
                self._working.subtract(names)
                self._working = +self._working  # drop the zeros

    def renew(self) -> int:
        """Extend the claims of the work going on now by a lease from now (a job every
        third of a lease); returns how many were extended."""
        with self._guard:
            names = sorted(self._working)
        try:
            return self._book.renew(names, self.holder, self.ttl)
        except StoreError as exc:  # the next renewal comes within a third of a lease
            log.warning("cannot renew claims", claims=len(names), error=str(exc))
            return 0

    @contextmanager
    def hold(
        self, name: str, *, slot: datetime | None = None, ttl: timedelta | None = None
    ) -> Iterator[Claim | None]:
        """Claim ``name`` (for ``slot``), yield the claim or None when another replica
        has it or the slot is done; finish on success, release on an exception.

        A database that cannot be reached yields None: the work is not done twice,
        and its due time comes round again (or another replica takes it).
        """
        try:
            claim = self._book.claim(name, self.holder, ttl or self.ttl, slot=slot)
        except StoreError as exc:
            log.warning("cannot claim work; skipped this time", work=name, error=str(exc))
            claim = None
        if claim is None:
            yield None
            return
        try:
            yield claim
        except BaseException:
            self._let_go(claim)
            raise
        try:
            self._book.finish(claim)
        except StoreError as exc:  # the work is done; its claim simply expires
            log.warning("cannot mark work done", work=name, error=str(exc))

    def claim_many(
        self, names: Sequence[str], *, slot: datetime, ttl: timedelta | None = None
    ) -> list[Claim]:
        """Claim the free ones of ``names`` for ``slot`` in one transaction (a batch of
        due KPIs); none when the database cannot be reached, as with :meth:`hold`."""
        try:
            return self._book.claim_many(names, self.holder, ttl or self.ttl, slot=slot)
        except StoreError as exc:
            log.warning("cannot claim work; skipped this time", work=names[0] if names else "",
                        batch=len(names), error=str(exc))  # fmt: skip
            return []

    def settle(self, done: Sequence[Claim], failed: Sequence[Claim]) -> None:
        """After a batch: mark the slots of ``done`` finished and let ``failed`` go
        (another replica may take them now). Unsaved marks simply expire."""
        try:
            self._book.finish_many(done)
            self._book.release_many(failed)
        except StoreError as exc:
            log.warning("cannot mark work done; its claims expire", batch=len(done),
                        error=str(exc))  # fmt: skip

    def abandoned(self, prefix: str) -> list[tuple[str, datetime | None]]:
        """Work under ``prefix`` that a replica claimed and never finished."""
        return self._book.abandoned(prefix)

    def _let_go(self, claim: Claim) -> None:
        try:
            self._book.release(claim)
        except StoreError as exc:
            log.warning("cannot release work; it expires", work=claim.name, error=str(exc))
