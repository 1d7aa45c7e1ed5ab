"""Logging set-up: one redacted pipeline for our events and the libraries' records;
APScheduler's expected outbox skips are not warnings people see."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from kpiwatch import known_secrets
from kpiwatch.logs import configure_logging

SKIPPED = 'Execution of job "%s" skipped: maximum number of running instances reached (%d)'


def test_busy_outbox_ticks_and_skipped_kpi_runs_are_not_one_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure_logging("json")
    scheduler = logging.getLogger("apscheduler.scheduler")
    with caplog.at_level(logging.WARNING):
        scheduler.warning(SKIPPED, "outbox (trigger: interval[0:00:00.250000])", 1)
        # counted and told once a minute instead (runtime/schedule_health.py)
        scheduler.warning(SKIPPED, "evaluate churn (trigger: interval[0:05:00])", 1)
        scheduler.warning(SKIPPED, "reviews (trigger: interval[0:01:00])", 1)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith('Execution of job "reviews')


# ---------------------------------------------------------------- one pipeline, redacted


@pytest.fixture
def registry() -> Iterator[None]:
    known_secrets.forget_all()
    yield
    known_secrets.forget_all()


def _json_lines(capsys: pytest.CaptureFixture[str]) -> tuple[str, list[dict[str, Any]]]:
    err = capsys.readouterr().err
    return err, [json.loads(line) for line in err.splitlines()]


def test_a_librarys_record_is_rendered_and_redacted_like_our_events(
    capsys: pytest.CaptureFixture[str], registry: None
) -> None:
    configure_logging("json")
    logging.getLogger("urllib3.connectionpool").warning(
        "Retrying (%s) after connection broken by '%s': %s",
        "Retry(total=1)", "NewConnectionError()", "/v1/m?token=s3cr3t-a&page=2",
    )  # fmt: skip
    structlog.get_logger("kpiwatch.test").warning(
        "fetch failed", url="http://h/m?api_key=s3cr3t-b&x=1", errors=["password=s3cr3t-c;next"]
    )
    err, lines = _json_lines(capsys)
    assert "s3cr3t" not in err
    assert lines[0]["logger"] == "urllib3.connectionpool"
    assert lines[0]["level"] == "warning"
    assert lines[0]["event"].endswith("': /v1/m?token=***&page=2")
    assert "timestamp" in lines[0]
    assert lines[1]["url"] == "http://h/m?api_key=***&x=1"
    assert lines[1]["errors"] == ["password=***;next"]


def test_exception_text_is_redacted_for_libraries_and_for_us(
    capsys: pytest.CaptureFixture[str], registry: None
) -> None:
    configure_logging("json")
    try:
        raise ConnectionError("cannot reach postgresql://kpi:s3cr3t-pw@db/x?sslpassword=s3cr3t-k")
    except ConnectionError:
        logging.getLogger("sqlalchemy.pool").error("connection failed", exc_info=True)
        structlog.get_logger("kpiwatch.test").exception("evaluation failed")
    err, lines = _json_lines(capsys)
    assert "s3cr3t" not in err
    assert [line["logger"] for line in lines if "logger" in line] == ["sqlalchemy.pool"]
    for line in lines:
        assert line["exception"].startswith("Traceback (most recent call last)")
        assert "postgresql://kpi:***@db/x?sslpassword=***" in line["exception"]


def test_uvicorns_loggers_and_known_secrets_in_console_format(
    capsys: pytest.CaptureFixture[str], registry: None
) -> None:
    known_secrets.register(["hdr-v4lue-s3cr3t"])
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler())  # a stray handler
    configure_logging("console")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received: %s", "/p?sig=s3cr3t")
    logging.getLogger("slack_sdk.web").error("sent X-Api-Key: hdr-v4lue-s3cr3t and got 403")
    err = capsys.readouterr().err
    assert "s3cr3t" not in err
    lines = err.splitlines()
    assert len(lines) == 2  # each once: uvicorn's own handler is gone
    assert "Invalid HTTP request received: /p?sig=***" in lines[0]
    assert "[uvicorn.error]" in lines[0]
    assert "sent X-Api-Key: *** and got 403" in lines[1]


def test_libraries_stay_at_warning_while_kpiwatch_logs_at_its_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "debug")
    logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
    logging.getLogger("apscheduler.scheduler").info("Added job")
    structlog.get_logger("kpiwatch.test").debug("ours")
    _, lines = _json_lines(capsys)
    assert [line["event"] for line in lines] == ["ours"]
