""""Read-only" SQL that writes: each probe against the real server, and no side effect.

Every probe once wrote a file or ran a command through a KPI query. Each is sent
twice: through ``fetch`` (the statement check refuses it) and straight to the
connection (``_run``, past the check), where the database-side guard must hold on
its own: SQLite's read-only file and authorizer. PostgreSQL and MariaDB connect as
superuser/root with ``allow_privileged: true`` - the worst case the operator can
opt into - so the statement check alone stands between the probe and the server.
The servers run on this machine: a file they would write under /tmp is visible here.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kpiwatch.config import rules
from kpiwatch.errors import SourceError
from kpiwatch.sources.sql import SqlQuerySource

NOW = datetime(2024, 6, 1, tzinfo=UTC)
REFUSED = r"not sent: .*a KPI query must be a single SELECT"


def _kpi(query: str) -> rules.Kpi:
    return rules.Kpi(
        id="probe", name="Probe", owner="ann", direction="higher_is_better",
        source="wh", query=query,
    )  # fmt: skip


def _source(url: str, *, allow_privileged: bool = False) -> SqlQuerySource:
    config = rules.SqlSource(type="sql", url=url, allow_privileged=allow_privileged)
    return SqlQuerySource("wh", config)


def _refusal(source: SqlQuerySource, query: str) -> str:
    """The fetch's error message ("" if the query was answered)."""
    try:
        source.fetch(_kpi(query), NOW)
    except SourceError as exc:
        return str(exc)
    return ""


@pytest.fixture
def server_file() -> Iterator[Path]:
    """A unique /tmp path the database server could write to; removed whatever happens."""
    path = Path(f"/tmp/kpiwatch-probe-{uuid.uuid4().hex}")
    yield path
    path.unlink(missing_ok=True)


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
@pytest.mark.parametrize(
    "template",
    ["COPY (SELECT 1) TO PROGRAM 'id > {path}'", "COPY (SELECT 1) TO '{path}'"],
    ids=["to-program", "to-file"],
)
def test_postgres_copy_runs_no_command_and_writes_no_file(
    postgres_url: str, server_file: Path, template: str
) -> None:
    source = _source(postgres_url, allow_privileged=True)
    try:
        refusal = _refusal(source, template.format(path=server_file))
        assert source.fetch(_kpi("SELECT 1"), NOW).current.value == 1.0  # the source works
    finally:
        source.close()

    assert not server_file.exists()  # first: what a run of the query would have left
    assert re.search(REFUSED, refusal), refusal


# ---------------------------------------------------------------- MariaDB


@pytest.mark.mariadb
@pytest.mark.parametrize("into", ["OUTFILE", "DUMPFILE"])
def test_mariadb_select_into_file_writes_no_file(
    mariadb_url: str, server_file: Path, into: str
) -> None:
    source = _source(mariadb_url, allow_privileged=True)
    try:
        refusal = _refusal(source, f"SELECT 1 INTO {into} '{server_file}'")
    finally:
        source.close()

    assert not server_file.exists()
    assert re.search(REFUSED, refusal), refusal


# ---------------------------------------------------------------- SQLite


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    """A WAL-mode warehouse: ``journal_mode=DELETE`` would change its header."""
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE signups (value REAL)")
        db.execute("INSERT INTO signups VALUES (12)")
    db.close()
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


SQLITE_PROBES = {
    "journal-mode": "PRAGMA journal_mode=DELETE",
    "attach": "ATTACH DATABASE '{dir}/attached.db' AS y",
    "attach-uri": "ATTACH DATABASE 'file:{dir}/attached-uri.db?mode=rwc' AS y",
    "vacuum-into": "VACUUM INTO '{dir}/copy.db'",
}


@pytest.mark.parametrize("probe", list(SQLITE_PROBES.values()), ids=list(SQLITE_PROBES))
def test_sqlite_probe_changes_and_creates_nothing(warehouse: Path, probe: str) -> None:
    directory = warehouse.parent
    before_files, before_digest = _files(directory), _digest(warehouse)
    query = probe.format(dir=directory)
    source = _source(f"sqlite:///{warehouse}")
    try:
        refusal = _refusal(source, query)
        # past the statement check, the connection refuses it too ("not authorized")
        try:
            source._run(query)
            underneath = ""
        except Exception as exc:
            underneath = str(exc)
        assert source.fetch(_kpi("SELECT value FROM signups"), NOW).current.value == 12.0
    finally:
        source.close()

    assert _files(directory) - before_files <= {"warehouse.db-shm", "warehouse.db-wal"}
    assert _digest(warehouse) == before_digest
    with sqlite3.connect(warehouse) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
    assert re.search(REFUSED, refusal), refusal
    assert re.search(r"not authorized|authorization denied", underneath), underneath


def test_sqlite_in_memory_source_attaches_no_file(tmp_path: Path) -> None:
    source = _source("sqlite://")
    try:
        with pytest.raises(Exception, match=r"not authorized|authorization denied"):
            source._run(f"ATTACH DATABASE '{tmp_path}/attached.db' AS y")
        assert source.fetch(_kpi("SELECT 3"), NOW).current.value == 3.0
    finally:
        source.close()

    assert os.listdir(tmp_path) == []


def test_sqlite_missing_warehouse_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    source = _source(f"sqlite:///{tmp_path}/absent.db")
    try:
        with pytest.raises(SourceError, match="unable to open database file"):
            source.fetch(_kpi("SELECT 1"), NOW)
    finally:
        source.close()

    assert not (tmp_path / "absent.db").exists()


def test_sqlite_path_with_uri_characters_is_read(tmp_path: Path) -> None:
    odd = tmp_path / "a b#c"  # URI characters, quoted in the file: URI
    odd.mkdir()
    with sqlite3.connect(odd / "w.db") as db:
        db.execute("CREATE TABLE t (v REAL)")
        db.execute("INSERT INTO t VALUES (4)")
    db.close()
    source = _source(f"sqlite:///{odd}/w.db")
    try:
        assert source.fetch(_kpi("SELECT v FROM t"), NOW).current.value == 4.0
    finally:
        source.close()
