"""CSV paths: only regular files inside the rules directory or KPIWATCH_FILE_ROOTS are read.

Checked when the rules load (a load error naming the key) and again on every
read (a file swapped for a link or a FIFO after the load is refused). Errors
about a file's content quote no more than its header names, cut short.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kpiwatch.config import rules
from kpiwatch.config.file_roots import FileRoots
from kpiwatch.config.loader import LoadedRules, load_rules
from kpiwatch.errors import RuleLoadError, SourceError
from kpiwatch.sources.csv_file import CsvTableSource

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
KPI = rules.Kpi(
    id="k", name="K", owner="ann", direction="higher_is_better", source="sheet", query="value"
)
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
ENV_DUMP = f"PATH=/usr/bin\x00AWS_SECRET_ACCESS_KEY={SECRET}\x00HOME=/root\x00".encode()


def _rules(rules_dir: Path, path: str, *, file: str = "x.yaml") -> Path:
    """A rule file declaring source ``sheet`` with ``path`` (line 3, column 11)."""
    rule_file = rules_dir / file
    rule_file.parent.mkdir(parents=True, exist_ok=True)
    rule_file.write_text(
        "sources:\n"
        "  sheet:\n"
        f"    path: {path!r}\n"
        "    type: csv\n"
        "kpis:\n"
        "  - {id: k, name: K, owner: ann, direction: higher_is_better, source: sheet,"
        " query: value}\n"
    )
    return rule_file


def _load_error(rules_dir: Path, path: str, **options: object) -> str:
    rule_file = _rules(rules_dir, path)
    with pytest.raises(RuleLoadError) as caught:
        load_rules(rules_dir, env={}, **options)  # type: ignore[arg-type]
    problems = [str(p) for p in caught.value.problems]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{rule_file}:3:11: sources.sheet.path: "), problems[0]
    return problems[0]


def _source(loaded: LoadedRules) -> CsvTableSource:
    """The source as the daemon builds it: relative to its rule file, the load's roots."""
    config = loaded.rules.sources["sheet"]
    assert isinstance(config, rules.CsvSource)
    file, _, _ = loaded.source_locations["sheet"]
    return CsvTableSource("sheet", config, base_dir=Path(file).parent, roots=loaded.file_roots)


def _fetch_error(source: CsvTableSource) -> str:
    with pytest.raises(SourceError) as caught:
        source.fetch(KPI, NOW)
    return str(caught.value)


# ------------------------------------------------------------ at load


def test_proc_self_environ_is_a_load_error(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "/proc/self/environ")
    assert "'/proc/self/environ' (resolves to '/proc/" in error
    assert f"is outside the rules directory and KPIWATCH_FILE_ROOTS ({tmp_path.resolve()})" in error


@pytest.mark.parametrize("path", ["/etc/shadow", "/etc/hostname", "/dev/zero"])
def test_absolute_paths_elsewhere_are_load_errors(tmp_path: Path, path: str) -> None:
    error = _load_error(tmp_path, path)
    assert f"'{path}' is outside the rules directory and KPIWATCH_FILE_ROOTS" in error


def test_dot_dot_escapes_are_load_errors(tmp_path: Path) -> None:
    rules_dir = tmp_path / "a" / "b" / "rules"
    rules_dir.mkdir(parents=True)
    error = _load_error(rules_dir, "../../../../etc/passwd")
    assert f"(resolves to '{tmp_path.resolve().parent}/etc/passwd') is outside" in error
    to_root = "../" * len(rules_dir.resolve().parts)  # one more than needed: stays at /
    error = _load_error(rules_dir, f"{to_root}etc/passwd")
    assert "(resolves to '/etc/passwd') is outside" in error


def test_a_symlink_in_the_rules_dir_pointing_out_is_a_load_error(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    outside = tmp_path / "outside.csv"
    outside.write_text("value\n1\n")
    rules_dir.mkdir()
    (rules_dir / "link.csv").symlink_to(outside)
    error = _load_error(rules_dir, "link.csv")
    assert f"'{rules_dir / 'link.csv'}' (resolves to '{outside}') is outside" in error


@pytest.mark.timeout(10)
def test_a_fifo_in_the_rules_dir_is_a_load_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.csv")
    error = _load_error(tmp_path, "pipe.csv")
    assert "pipe.csv' is a FIFO (named pipe): name a regular file" in error


def test_a_directory_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    assert "data' is a directory: name a regular file" in _load_error(tmp_path, "data")


def test_the_pseudo_filesystems_are_refused_even_inside_a_root(tmp_path: Path) -> None:
    error = _load_error(tmp_path, "/proc/self/environ", file_roots=[Path("/proc")])
    assert "is in /proc, a kernel pseudo-filesystem, not data" in error
    error = _load_error(tmp_path, "/dev/zero", file_roots=[Path("/")])
    assert "is in /dev, a kernel pseudo-filesystem, not data" in error


def test_a_path_in_a_file_root_loads_and_is_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "kpis.csv").write_text("value\n7\n")
    rules_dir = tmp_path / "rules"
    _rules(rules_dir, str(data / "kpis.csv"))
    with pytest.raises(RuleLoadError, match="is outside the rules directory"):
        load_rules(rules_dir, env={})  # not without the root
    loaded = load_rules(rules_dir, env={}, file_roots=[data])
    assert _source(loaded).fetch(KPI, NOW).current.value == 7


def test_relative_paths_are_relative_to_the_rule_file(tmp_path: Path) -> None:
    (tmp_path / "finance" / "data").mkdir(parents=True)
    (tmp_path / "finance" / "data" / "kpis.csv").write_text("value\n3\n")
    _rules(tmp_path, "data/kpis.csv", file="finance/x.yaml")
    assert _source(load_rules(tmp_path, env={})).fetch(KPI, NOW).current.value == 3


def test_a_file_not_there_yet_loads_and_fails_when_read(tmp_path: Path) -> None:
    _rules(tmp_path, "later.csv")
    source = _source(load_rules(tmp_path, env={}))
    assert f"file not found: {tmp_path / 'later.csv'}" in _fetch_error(source)
    (tmp_path / "later.csv").write_text("value\n5\n")
    assert source.fetch(KPI, NOW).current.value == 5


def test_every_bad_path_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "sources:\n"
        "  a: {type: csv, path: /etc/hostname}\n"
        "  b: {type: csv, path: ../secrets.csv}\n"
        "  c: {type: csv, path: ok.csv}\n"
    )
    with pytest.raises(RuleLoadError) as caught:
        load_rules(tmp_path, env={})
    assert [p.path for p in caught.value.problems] == ["sources.a.path", "sources.b.path"]


# ------------------------------------------------------------ when read


def test_a_file_swapped_for_a_symlink_after_loading_is_not_read(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    _rules(rules_dir, "kpis.csv")
    (rules_dir / "kpis.csv").write_text("value\n1\n")
    source = _source(load_rules(rules_dir, env={}))
    assert source.fetch(KPI, NOW).current.value == 1
    outside = tmp_path / "outside.csv"
    outside.write_text(f"{SECRET}\n1\n")
    (rules_dir / "kpis.csv").unlink()
    (rules_dir / "kpis.csv").symlink_to(outside)
    error = _fetch_error(source)
    assert f"not read: '{rules_dir / 'kpis.csv'}' (resolves to '{outside}') is outside" in error
    assert SECRET not in error


def test_a_directory_on_the_way_swapped_for_a_symlink_is_not_read(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    (rules_dir / "data").mkdir(parents=True)
    (rules_dir / "data" / "kpis.csv").write_text("value\n1\n")
    _rules(rules_dir, "data/kpis.csv")
    source = _source(load_rules(rules_dir, env={}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "kpis.csv").write_text("value\n666\n")
    (rules_dir / "data" / "kpis.csv").unlink()
    (rules_dir / "data").rmdir()
    (rules_dir / "data").symlink_to(elsewhere)
    assert f"(resolves to '{elsewhere / 'kpis.csv'}') is outside" in _fetch_error(source)


@pytest.mark.timeout(10)
def test_a_file_swapped_for_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    _rules(tmp_path, "kpis.csv")
    (tmp_path / "kpis.csv").write_text("value\n1\n")
    source = _source(load_rules(tmp_path, env={}))
    (tmp_path / "kpis.csv").unlink()
    os.mkfifo(tmp_path / "kpis.csv")
    errors: list[str] = []
    # a blocking open would wait for a writer forever: run it where the test can give up
    reader = threading.Thread(target=lambda: errors.append(_fetch_error(source)), daemon=True)
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "the fetch blocked on the FIFO"
    assert errors == [
        f"source 'sheet': query for 'k': not read: '{tmp_path / 'kpis.csv'}' "
        "is a FIFO (named pipe): name a regular file"
    ]


def test_dev_zero_is_not_read_even_in_a_root(tmp_path: Path) -> None:
    config = rules.CsvSource(type="csv", path="/dev/zero", max_bytes=1024)
    roots = FileRoots.of(tmp_path, [Path("/dev")])
    source = CsvTableSource("sheet", config, base_dir=tmp_path, roots=roots)
    assert "'/dev/zero' is in /dev, a kernel pseudo-filesystem" in _fetch_error(source)


def test_without_roots_a_source_reads_only_under_its_base_dir(tmp_path: Path) -> None:
    config = rules.CsvSource(type="csv", path="/etc/hostname")
    source = CsvTableSource("sheet", config, base_dir=tmp_path)
    assert "'/etc/hostname' is outside the rules directory" in _fetch_error(source)


# ------------------------------------------------------------ what errors quote


def test_an_environment_dump_is_not_quoted_in_errors(tmp_path: Path) -> None:
    (tmp_path / "kpis.csv").write_bytes(ENV_DUMP)
    _rules(tmp_path, "kpis.csv")
    error = _fetch_error(_source(load_rules(tmp_path, env={})))
    assert "(the KPI's query) (columns: 'PATH=/usr/bin…')" in error
    for part in (SECRET[:4], SECRET[-4:], "AWS_SECRET", "HOME=", "\x00", "\\x00"):
        assert part not in error


def test_header_names_are_cut_to_64_characters(tmp_path: Path) -> None:
    long_name = "n" * 100
    (tmp_path / "kpis.csv").write_text(f"{long_name},{SECRET}\n1,2\n")
    _rules(tmp_path, "kpis.csv")
    error = _fetch_error(_source(load_rules(tmp_path, env={})))
    assert f"(columns: '{'n' * 64}…', '{SECRET}')" in error  # a header is a name: quoted
    assert "n" * 65 not in error


def test_a_data_cell_is_quoted_only_up_to_24_characters(tmp_path: Path) -> None:
    (tmp_path / "kpis.csv").write_text(f"value\n{SECRET}\n")
    _rules(tmp_path, "kpis.csv")
    error = _fetch_error(_source(load_rules(tmp_path, env={})))
    assert f"row 2, column 'value': '{SECRET[:24]}…' is not a number" in error
    assert SECRET[24:] not in error


def test_a_data_cell_is_quoted_only_up_to_a_control_character(tmp_path: Path) -> None:
    (tmp_path / "kpis.csv").write_bytes(b"value\nx\x00" + SECRET.encode() + b"\n")
    _rules(tmp_path, "kpis.csv")
    error = _fetch_error(_source(load_rules(tmp_path, env={})))
    assert "row 2, column 'value': 'x…' is not a number" in error
    assert SECRET[:4] not in error
