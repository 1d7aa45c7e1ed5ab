"""KPI values from a CSV file: a local path, or a URL such as a published spreadsheet.

The file needs a header row. A KPI's ``query`` names its value column:

* without ``timestamp_column``: the value in the last row of the sheet is the
  current value, observed at ``now`` (earlier rows are not read);
* with ``timestamp_column``: every row is a point; the rows are sorted by
  time and the latest is the current value. Timestamps are ISO-8601 dates or
  date-times (no offset means UTC) or epoch seconds.

Rows are numbered as a spreadsheet shows them: the header is row 1. Fully
empty rows are skipped anywhere. Rows at the *end* of the sheet whose value
cell is empty are skipped too: a sheet often lists dates ahead, filled in as
periods close. An empty value cell *between* filled rows is an error, as is
any cell that is not a number: skipping it would silently change the series.

Numbers are plain decimals (``42``, ``-3.5``, ``.5``, ``1e3``). Thousands
separators as spreadsheets export them (``1,234.5``, groups of three) are
accepted, except with a ``;`` delimiter: that is the decimal-comma locales'
CSV, where ``1,234`` may mean 1.234. Decimal commas, percentages, currency,
``NaN`` and ``inf`` are refused.

Files are decoded as UTF-8 (a byte-order mark is fine) and limited to
``max_bytes``. A local ``path`` is relative to the directory of the rule file
that declares the source, and must be a regular file inside the rules
directory or ``KPIWATCH_FILE_ROOTS`` (:mod:`kpiwatch.config.file_roots`),
checked again on every read. Downloads follow redirects (published sheets
redirect to a content host; the source sends no credentials); with
``follow_redirects: false`` only within the URL's origin
(:func:`kpiwatch.sources.web.new_session`). ``timeout`` bounds the whole
download; an HTML answer (typically a sign-in page for a sheet that is not
public) is an error. Messages show a
URL as scheme://host/path only.

Messages quote no more of a file than its header cells' names, each up to
its first non-printable character and 64 characters, and a data cell that is
not a number or a time up to 24: a file that is not a sheet (an environment
dump, a key file) must not be published through its error.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import math
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import requests

from kpiwatch.config import rules
from kpiwatch.config.file_roots import FileRefused, FileRoots, candidate, read_file
from kpiwatch.errors import BadValueError, SourceError, SourceTimeout, SourceUnavailable
from kpiwatch.model import Observation
from kpiwatch.sources import web
from kpiwatch.sources.base import FetchResult, observations_of
from kpiwatch.sources.values import to_number, to_utc

MAX_POINTS = 10_000  # as SQL's MAX_ROWS; longer sheets keep their newest points
_SHOWN_COLUMNS = 20  # columns listed in a "no such column" message
_NAME_LIMIT = 64  # characters of a header cell quoted in a message
_CELL_LIMIT = 24  # characters of a data cell quoted in a message
_PLAIN = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
_HTML_START = re.compile(rb"\s*<(?:!doctype\s+html|html[\s>]|head[\s>])", re.I)
_OTHER_DELIMITERS = (",", ";", "\t", "|")
T = TypeVar("T")


class CsvTableSource:
    """A ``type: csv`` source: reads the whole file on every fetch."""

    def __init__(
        self,
        name: str,
        config: rules.CsvSource,
        *,
        base_dir: Path | None = None,
        roots: FileRoots | None = None,
    ) -> None:
        """``base_dir``: what a relative path is relative to (default: the working
        directory); ``roots``: where files may be read (default: ``base_dir`` only)."""
        self.name = name
        self._timestamp_column = config.timestamp_column
        self._delimiter = config.delimiter
        self._max_bytes = config.max_bytes
        self._timeout = config.timeout.total_seconds()
        self._url = config.url
        self._path: Path | None = None
        self._session: requests.Session | None = None
        if config.path is not None:
            # made absolute now: a later chdir must not move the file
            self._path = candidate(config.path, base_dir or Path.cwd())
            self._roots = roots or FileRoots.of(base_dir or Path.cwd())
            self._shown = str(self._path)
        else:
            self._shown = web.shown_url(config.url or "")
            self._session = web.new_session(
                accept="text/csv, text/plain;q=0.9, */*;q=0.1",
                pool_maxsize=config.max_concurrency,
                follow_redirects=config.follow_redirects,
            )

    def fetch(self, kpi: rules.Kpi, now: datetime) -> FetchResult:
        """Read the file and take the KPI's column; raise SourceError, nothing else."""
        start = time.monotonic()
        try:
            data = self._read_local(kpi) if self._path is not None else self._download(kpi, start)
            observations = self._parse(kpi, data, now)
        except SourceError:
            raise
        except Exception as exc:  # any other failure, ours included, becomes a SourceError
            elapsed = time.monotonic() - start
            if web.is_timeout(exc):
                raise self._timed_out(kpi, elapsed) from exc
            raise self._down(kpi, f"reading {self._shown} failed: {web.describe(exc)}") from exc
        return FetchResult(observations, time.monotonic() - start)

    def close(self) -> None:
        """Close the download session's pooled connections, if there is one."""
        if self._session is not None:
            self._session.close()

    # ------------------------------------------------------------ reading

    def _read_local(self, kpi: rules.Kpi) -> bytes:
        assert self._path is not None
        try:
            data = read_file(self._path, self._roots, self._max_bytes)
        except FileRefused as exc:
            raise self._down(kpi, f"not read: {exc}") from None
        except FileNotFoundError:
            raise self._down(kpi, f"file not found: {self._path}") from None
        except OSError as exc:  # no permission, an I/O error
            reason = exc.strerror or type(exc).__name__
            raise self._down(kpi, f"cannot read {self._path}: {reason}") from None
        if len(data) > self._max_bytes:
            raise self._too_large(kpi, "file")
        return data

    def _download(self, kpi: rules.Kpi, start: float) -> bytes:
        assert self._session is not None
        assert self._url is not None
        response = self._session.get(self._url, timeout=(self._timeout, self._timeout), stream=True)
        with response:
            if response.status_code >= 400:
                hint = " (is the sheet public?)" if response.status_code in (401, 403) else ""
                raise self._down(kpi, f"{self._shown} answered {web.status_line(response)}{hint}")
            content_type = web.content_type(response).lower()
            if content_type in ("text/html", "application/xhtml+xml"):
                raise self._not_csv(kpi, content_type)
            try:
                data = web.read_body(
                    response, deadline=start + self._timeout, limit=self._max_bytes
                )
            except web.BodyTimeout as exc:
                raise self._timed_out(kpi, time.monotonic() - start) from exc.__cause__
            except web.BodyTooLarge:
                raise self._too_large(kpi, "response") from None
        if _HTML_START.match(data[:1024]):  # an HTML page sent as text/plain or as nothing
            raise self._not_csv(kpi, "text/html")
        return data

    # ------------------------------------------------------------ parsing

    def _parse(self, kpi: rules.Kpi, data: bytes, now: datetime) -> tuple[Observation, ...]:
        try:
            text = codecs.decode(data, "utf-8-sig")
        except UnicodeDecodeError as exc:
            raise self._failed(
                kpi,
                f"{self._shown} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                f"{exc.start}); export it as CSV UTF-8",
            ) from None
        rows = self._records(kpi, text)
        _, header = next(rows, (0, []))
        if not header:
            raise self._bad(kpi, "no data rows (the file is empty)")
        value_at = self._column(kpi, header, kpi.query, "value column (the KPI's query)")
        time_at = None  # both columns checked first: a typo is reported before "no rows"
        if self._timestamp_column is not None:
            time_at = self._column(kpi, header, self._timestamp_column, "timestamp_column")
        data_rows = [(number, row) for number, row in rows if any(cell.strip() for cell in row)]
        if not data_rows:
            raise self._bad(kpi, "no data rows (only the header)")
        # the unfilled tail of the sheet: rows with no value yet
        while data_rows and not _cell(data_rows[-1][1], value_at):
            data_rows.pop()
        value_name = header[value_at].strip()
        if not data_rows:
            shown = _quoted(value_name, _NAME_LIMIT)
            raise self._bad(kpi, f"no data rows: column {shown} is empty in every row")

        if time_at is None:
            number, row = data_rows[-1]
            value = self._convert(kpi, _number, row, value_at, number, value_name)
            return (Observation(kpi.id, now, value),)

        time_name = header[time_at].strip()
        points = [
            (
                self._convert(kpi, _timestamp, row, time_at, number, time_name),
                self._convert(kpi, _number, row, value_at, number, value_name),
            )
            for number, row in data_rows
        ]
        return observations_of(kpi.id, points)[-MAX_POINTS:]

    def _records(self, kpi: rules.Kpi, text: str) -> Iterator[tuple[int, list[str]]]:
        """(spreadsheet row number, cells), starting at the header: leading empty rows skipped."""
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self._delimiter)
        number = 0
        seen_header = False
        while True:
            number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self._failed(kpi, f"row {number}: not valid CSV: {exc}") from None
            if seen_header or any(cell.strip() for cell in row):
                seen_header = True
                yield number, row

    def _column(self, kpi: rules.Kpi, header: list[str], wanted: str | None, what: str) -> int:
        names = [name.strip() for name in header]
        target = (wanted or "").strip()
        if not target:
            raise self._failed(kpi, f"no {what}: set it to a column name")
        matches = [i for i, name in enumerate(names) if name == target]
        if len(matches) == 1:
            return matches[0]
        if matches:
            rows = ", ".join(str(i + 1) for i in matches)
            raise self._failed(kpi, f"column {target!r} appears {len(matches)} times ({rows})")
        raise self._failed(kpi, f"no column {target!r} for the {what}{self._advice(target, names)}")

    def _advice(self, target: str, names: list[str]) -> str:
        """A did-you-mean and the columns there are, to fix a typo at a glance."""
        # matched as shown: a huge cell (a file that is not a sheet) would slow difflib
        folded = {_cut(name, _NAME_LIMIT).casefold(): name for name in names if name}
        close = difflib.get_close_matches(target.casefold(), list(folded), n=1, cutoff=0.6)
        advice = f"; did you mean {_quoted(folded[close[0]], _NAME_LIMIT)}?" if close else ""
        shown = ", ".join(_quoted(name, _NAME_LIMIT) for name in names[:_SHOWN_COLUMNS])
        more = f" and {len(names) - _SHOWN_COLUMNS} more" if len(names) > _SHOWN_COLUMNS else ""
        advice += f" (columns: {shown}{more})"
        if len(names) == 1:  # one column: the file probably uses another delimiter
            others = [d for d in _OTHER_DELIMITERS if d != self._delimiter and d in names[0]]
            if others:
                advice += (
                    f"; the header has one column: is the delimiter {others[0]!r}, "
                    f"not {self._delimiter!r}?"
                )
        return advice

    def _convert(
        self,
        kpi: rules.Kpi,
        convert: Callable[[str, str], T],
        row: list[str],
        at: int,
        number: int,
        name: str,
    ) -> T:
        try:
            return convert(_cell(row, at), self._delimiter)
        except ValueError as exc:
            shown = _quoted(name, _NAME_LIMIT)
            raise self._bad(kpi, f"row {number}, column {shown}: {exc}") from None

    # ------------------------------------------------------------ errors

    def _failed(self, kpi: rules.Kpi, what: str) -> SourceError:
        # library messages may quote the full URL, query string (keys) included
        what = web.scrub_query(what)
        return SourceError(f"query for {kpi.id!r}: {what}", source=self.name, kpi=kpi.id)

    def _down(self, kpi: rules.Kpi, what: str) -> SourceUnavailable:
        """The file cannot be had at all: every KPI of the source fails alike."""
        what = web.scrub_query(what)
        return SourceUnavailable(f"query for {kpi.id!r}: {what}", source=self.name, kpi=kpi.id)

    def _bad(self, kpi: rules.Kpi, what: str) -> BadValueError:
        return BadValueError(f"query for {kpi.id!r}: {what}", source=self.name, kpi=kpi.id)

    def _not_csv(self, kpi: rules.Kpi, content_type: str) -> SourceError:
        return self._failed(
            kpi,
            f"{self._shown}: expected CSV, got {content_type} (a sign-in page? "
            "publish the sheet to the web as CSV)",
        )

    def _too_large(self, kpi: rules.Kpi, what: str) -> SourceError:
        return self._failed(
            kpi, f"{what} larger than {web.size(self._max_bytes)} limit (max_bytes)"
        )

    def _timed_out(self, kpi: rules.Kpi, elapsed: float) -> SourceTimeout:
        return SourceTimeout(
            f"query for {kpi.id!r}: download of {self._shown} timed out after "
            f"{elapsed:.1f}s (timeout {self._timeout:g}s)",
            source=self.name,
            kpi=kpi.id,
        )


def _cell(row: list[str], at: int) -> str:
    """The stripped cell, or "" for a row shorter than the header."""
    return row[at].strip() if at < len(row) else ""


def _number(text: str, delimiter: str) -> float:
    """A finite float from a cell's text (see the module docstring for what is accepted)."""
    if not text:
        raise ValueError("empty cell (fill it in, or delete the row)")
    plain = text
    if delimiter != ";" and _GROUPED.fullmatch(text):
        plain = text.replace(",", "")
    if not _PLAIN.fullmatch(plain):
        hint = ""
        if text.endswith("%"):
            hint = " (a percentage: format the column as a plain number)"
        elif _DECIMAL_COMMA.fullmatch(text) or (delimiter == ";" and _GROUPED.fullmatch(text)):
            hint = " (a decimal comma? write numbers with a decimal point)"
        raise ValueError(f"{_quoted(text, _CELL_LIMIT)} is not a number{hint}")
    number = float(plain)
    if not math.isfinite(number):  # 1e999
        raise ValueError(f"{_quoted(text, _CELL_LIMIT)} is too large for a float")
    return to_number(number)


def _timestamp(text: str, delimiter: str) -> datetime:
    """ISO-8601 text first (``20240601`` is a date), then epoch seconds."""
    if not text:
        raise ValueError("empty cell (fill it in, or delete the row)")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        return to_utc(parsed)  # its own "out of range" message: 0001-01-01T00:00+01:00
    if _PLAIN.fullmatch(text):
        return to_utc(float(text))  # its own "out of range" message
    raise ValueError(
        f"{_quoted(text, _CELL_LIMIT)} is not an ISO-8601 date or date-time, nor epoch seconds"
    )


def _quoted(text: str, limit: int) -> str:
    """``text`` cut by :func:`_cut` and quoted, for a message."""
    return repr(_cut(text, limit))


def _cut(text: str, limit: int) -> str:
    """``text`` up to its first non-printable character and ``limit`` characters ("…" if cut).

    File content reaches messages only through here. A header or a value never
    holds a control character: one means the file is not a sheet (an
    environment dump separates ``KEY=secret`` entries with NULs), and what
    follows it is not quoted.
    """
    text = text.strip()
    head = text[:limit]
    shown = head[: next((i for i, char in enumerate(head) if not char.isprintable()), limit)]
    return shown + "…" if len(shown) < len(text) else shown
