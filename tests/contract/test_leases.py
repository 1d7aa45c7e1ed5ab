"""Work leases on every backend: one holder at a time, slots done once, expiry.

The claim compares expiries with the database's clock; tests make a claim
already expired with a negative ttl instead of waiting for one to run out.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from kpiwatch.store import Store
from kpiwatch.store.leases import LeaseBook

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
EXPIRED = timedelta(seconds=-5)


@pytest.fixture
def book(store_url: str) -> Iterator[LeaseBook]:
    store = Store.open(store_url)
    yield LeaseBook(store.engine)
    store.close()


def test_one_holder_at_a_time(book: LeaseBook) -> None:
    first = book.claim("kpi:a", "A", MINUTE, slot=T0)
    assert first is not None
    assert first.holder == "A"
    assert first.previous_done is None
    assert book.claim("kpi:a", "B", MINUTE, slot=T0) is None
    assert book.claim("kpi:b", "B", MINUTE, slot=T0) is not None  # another piece of work


def test_a_finished_slot_is_not_done_again(book: LeaseBook) -> None:
    claim = book.claim("kpi:a", "A", MINUTE, slot=T0)
    assert claim is not None
    book.finish(claim)
    assert book.claim("kpi:a", "B", MINUTE, slot=T0) is None
    assert book.claim("kpi:a", "A", MINUTE, slot=T0 - MINUTE) is None  # older: done too
    later = book.claim("kpi:a", "B", MINUTE, slot=T0 + MINUTE)
    assert later is not None
    assert later.previous_done == T0


def test_finish_never_moves_the_done_slot_back(book: LeaseBook) -> None:
    new = book.claim("kpi:a", "A", MINUTE, slot=T0 + MINUTE)
    assert new is not None
    book.finish(new)
    old = book.claim("kpi:a", "B", MINUTE)  # exclusion only, no slot
    assert old is not None
    book.finish(old)
    assert book.claim("kpi:a", "C", MINUTE, slot=T0 + MINUTE) is None


def test_an_expired_claim_is_taken_over_and_listed_as_abandoned(book: LeaseBook) -> None:
    dead = book.claim("kpi:a", "A", EXPIRED, slot=T0)
    assert dead is not None
    assert book.claim("job:reviews", "A", EXPIRED, slot=T0) is not None
    assert book.abandoned("kpi:") == [("kpi:a", T0)]
    taken = book.claim("kpi:a", "B", MINUTE, slot=T0)
    assert taken is not None
    assert taken.holder == "B"
    assert book.abandoned("kpi:") == []  # B's claim has not expired
    book.finish(taken)
    assert book.abandoned("kpi:") == []
    book.release(dead)  # A wakes up late: it must not clear B's record
    assert book.claim("kpi:a", "C", MINUTE, slot=T0) is None


def test_released_work_can_be_claimed_at_once(book: LeaseBook) -> None:
    claim = book.claim("kpi:a", "A", MINUTE, slot=T0)
    assert claim is not None
    book.release(claim)
    assert book.claim("kpi:a", "B", MINUTE, slot=T0) is not None
    assert book.abandoned("kpi:") == []  # released or held: nothing abandoned


def test_prefix_is_not_a_pattern(book: LeaseBook) -> None:
    assert book.claim("kpi:a_b", "A", EXPIRED, slot=T0) is not None
    assert book.claim("kpi:aXb", "A", EXPIRED, slot=T0) is not None
    assert [name for name, _ in book.abandoned("kpi:a_")] == ["kpi:a_b"]


def test_database_clock_is_utc_and_current(book: LeaseBook) -> None:
    now = book.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.postgres
def test_concurrent_replicas_claim_each_slot_exactly_once(postgres_url: str) -> None:
    """Six threads, each its own connection, race for the same 60 due slots."""
    store = Store.open(postgres_url)
    book = LeaseBook(store.engine)
    holders = [f"replica-{n}" for n in range(6)]
    won: Counter[datetime] = Counter()
    guard = threading.Lock()
    slots = [T0 + n * MINUTE for n in range(60)]
    barrier = threading.Barrier(len(holders), timeout=30)
    errors: list[BaseException] = []

    def replica(holder: str) -> None:
        try:
            for slot in slots:
                barrier.wait()
                claim = book.claim("kpi:contended", holder, MINUTE, slot=slot)
                if claim is not None:
                    with guard:
                        won[slot] += 1
                    book.finish(claim)
        except BaseException as exc:  # surfaced below: a thread's failure fails the test
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=replica, args=(h,)) for h in holders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    store.close()
    assert not errors
    assert all(not thread.is_alive() for thread in threads)
    assert won == Counter(dict.fromkeys(slots, 1))


# -- batches: the scheduler claims the KPIs that fell due together in one transaction --


def test_a_batch_claim_takes_only_the_free_names(book: LeaseBook) -> None:
    held = book.claim("kpi:b", "B", MINUTE, slot=T0)
    done = book.claim("kpi:c", "B", MINUTE, slot=T0)
    assert held is not None
    assert done is not None
    book.finish(done)
    claims = book.claim_many(["kpi:a", "kpi:b", "kpi:c", "kpi:d"], "A", MINUTE, slot=T0)
    assert [c.name for c in claims] == ["kpi:a", "kpi:d"]  # b held by B, c's slot done
    assert all(c.holder == "A" and c.slot == T0 for c in claims)
    assert book.claim_many(["kpi:a", "kpi:d"], "B", MINUTE, slot=T0) == []


def test_a_batch_is_finished_and_let_go_together(book: LeaseBook) -> None:
    claims = book.claim_many(["kpi:a", "kpi:b", "kpi:c"], "A", MINUTE, slot=T0)
    book.finish_many(claims[:2])
    book.release_many(claims[2:])
    assert book.claim_many(["kpi:a", "kpi:b"], "B", MINUTE, slot=T0) == []  # done
    again = book.claim_many(["kpi:c"], "B", MINUTE, slot=T0)  # let go, not done
    assert [c.name for c in again] == ["kpi:c"]
    later = book.claim_many(["kpi:a", "kpi:b"], "B", MINUTE, slot=T0 + MINUTE)
    assert [c.previous_done for c in later] == [T0, T0]


def test_renewing_keeps_a_claim_from_expiring(book: LeaseBook) -> None:
    book.claim_many(["kpi:a", "kpi:b"], "A", EXPIRED, slot=T0)  # as if it had run out
    assert book.renew(["kpi:a"], "A", MINUTE) == 1
    assert book.renew(["kpi:b"], "Z", MINUTE) == 0  # only the holder's own claims
    assert [name for name, _ in book.abandoned("kpi:")] == ["kpi:b"]
    taken = book.claim_many(["kpi:a", "kpi:b"], "B", MINUTE, slot=T0)
    assert [c.name for c in taken] == ["kpi:b"]  # a is renewed: still A's


@pytest.mark.postgres
def test_concurrent_replicas_claim_each_kpi_of_a_batch_exactly_once(postgres_url: str) -> None:
    """Three replicas fire together for 400 KPIs' due time and claim them in chunks of
    50, in different orders: each KPI's slot is claimed by exactly one of them."""
    store = Store.open(postgres_url)
    book = LeaseBook(store.engine)
    names = [f"kpi:k{n:03}" for n in range(400)]
    chunks = [names[i : i + 50] for i in range(0, len(names), 50)]
    won: Counter[str] = Counter()
    guard = threading.Lock()
    barrier = threading.Barrier(3, timeout=30)
    errors: list[BaseException] = []

    def replica(n: int) -> None:
        try:
            barrier.wait()
            for chunk in chunks[n:] + chunks[:n]:
                claims = book.claim_many(chunk, f"replica-{n}", MINUTE, slot=T0)
                with guard:
                    won.update(c.name for c in claims)
                book.finish_many(claims)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    store.close()
    assert not errors
    assert won == Counter(dict.fromkeys(names, 1))
