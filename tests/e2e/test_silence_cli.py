"""`kpiwatch silence`, `ack` and `annotate` as a user runs them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import environment, kpiwatch

from kpiwatch.model import KpiState, ReviewCadence, Status
from kpiwatch.store import Store

RULES = """
teams:
  finance: {email: [fin@example.com]}
  growth: {email: [growth@example.com]}
kpis:
  - {id: nps, name: NPS, owner: sam@example.com, team: growth, direction: higher_is_better,
     source: push, thresholds: {yellow: 40, red: 30}, labels: {region: emea}}
  - {id: churn, name: Churn, owner: sam@example.com, team: finance, direction: lower_is_better,
     source: push, thresholds: {red: 5}}
"""


def _setup(workdir: Path) -> dict[str, str]:
    (workdir / "rules").mkdir()
    (workdir / "rules" / "kpis.yaml").write_text(RULES)
    return environment(workdir, USER="dana")


def _set_status(workdir: Path, status: Status) -> datetime:
    """Store a state for ``nps`` as an evaluation would; returns the episode start.

    Written through the store rather than `kpiwatch push`, so that this test is
    about `ack` only, not about the evaluation and notification pipeline.
    """
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    with Store.open(f"sqlite:///{workdir}/state.db") as store:
        store.save_state(KpiState("nps", status, since=since, review=ReviewCadence.MONTHLY))
    return since


def _id(stdout: str) -> str:
    match = re.search(r"silence #(\d+)", stdout)
    assert match, stdout
    return match.group(1)


def test_silence_add_list_expire(tmp_path: Path) -> None:
    env = _setup(tmp_path)
    before = datetime.now(UTC)
    added = kpiwatch(tmp_path, "silence", "add", "--kpi", "nps", "--for", "2h",
                     "--comment", "survey migration", env=env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "kpi nps until" in added.stdout
    first = _id(added.stdout)
    team = kpiwatch(tmp_path, "silence", "add", "--team", "finance", "--for", "1d",
                    "--comment", "quarter close", "--author", "kim", env=env)  # fmt: skip
    assert team.returncode == 0, team.stderr
    label = kpiwatch(tmp_path, "silence", "add", "--label", "region=emea", "--for", "30m",
                     "--comment", "emea outage", env=env)  # fmt: skip
    assert label.returncode == 0, label.stderr

    listed = kpiwatch(tmp_path, "silence", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["matcher"], r["value"], r["author"]) for r in rows] == [
        ("label", "region=emea", "dana"), ("team", "finance", "kim"), ("kpi", "nps", "dana")
    ]  # newest first
    nps = rows[2]
    assert nps["state"] == "active"
    assert nps["comment"] == "survey migration"
    ends = datetime.fromisoformat(nps["ends_at"])
    assert timedelta(hours=2) <= ends - before < timedelta(hours=2, minutes=1)
    text = kpiwatch(tmp_path, "silence", "list", env=env).stdout
    assert f"#{first}  kpi nps  active" in text
    assert "by kim: quarter close" in text

    expired = kpiwatch(tmp_path, "silence", "expire", first, env=env)
    assert expired.returncode == 0, expired.stderr
    assert f"expired silence #{first} (kpi nps)" in expired.stdout
    active = json.loads(kpiwatch(tmp_path, "silence", "list", "--json", env=env).stdout)
    assert [r["value"] for r in active] == ["region=emea", "finance"]
    every = json.loads(kpiwatch(tmp_path, "silence", "list", "--all", "--json", env=env).stdout)
    assert [r["state"] for r in every] == ["active", "active", "expired"]
    again = kpiwatch(tmp_path, "silence", "expire", first, env=env)
    assert again.returncode == 0
    assert "had already expired" in again.stdout
    missing = kpiwatch(tmp_path, "silence", "expire", "999", env=env)
    assert missing.returncode == 2
    assert "no silence with id 999" in missing.stderr


def test_silence_add_refuses_bad_input(tmp_path: Path) -> None:
    env = _setup(tmp_path)
    base = ("silence", "add", "--for", "1h", "--comment", "x")
    cases = {
        ("--kpi", "npss"): "no KPI 'npss' in the rules; did you mean 'nps'?",
        ("--team", "financ"): "no team 'financ' in the rules; did you mean 'finance'?",
        ("--label", "region"): "write KEY=VALUE",
        (): "give exactly one of --kpi ID, --team NAME or --label KEY=VALUE",
        ("--kpi", "nps", "--team", "growth"): "give exactly one of",
    }
    for args, message in cases.items():
        result = kpiwatch(tmp_path, *base, *args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    bad_for = kpiwatch(tmp_path, "silence", "add", "--kpi", "nps", "--for", "soon",
                       "--comment", "x", env=env)  # fmt: skip
    assert bad_for.returncode == 2
    assert "invalid duration 'soon'" in bad_for.stderr
    no_comment = kpiwatch(tmp_path, "silence", "add", "--kpi", "nps", "--for", "1h", env=env)
    assert no_comment.returncode == 2
    assert "--comment" in no_comment.stderr
    # an unknown label is allowed (it may be added soon), with a warning
    assert kpiwatch(tmp_path, *base, "--team", "growth", env=env).returncode == 0
    unknown_label = kpiwatch(tmp_path, *base, "--label", "tier=1", env=env)
    assert unknown_label.returncode == 0
    assert "no KPI has the label tier=1" in unknown_label.stderr
    listed = kpiwatch(tmp_path, "silence", "list", "--all", "--json", env=env)
    assert [r["value"] for r in json.loads(listed.stdout)] == ["tier=1", "growth"]


def test_silence_list_when_empty(tmp_path: Path) -> None:
    env = _setup(tmp_path)
    Store.open(f"sqlite:///{tmp_path}/state.db").close()  # a database with no silence in it
    assert kpiwatch(tmp_path, "silence", "list", env=env).stdout.strip() == "no active silences"
    assert kpiwatch(tmp_path, "silence", "list", "--json", env=env).stdout.strip() == "[]"


def test_ack_needs_a_red_or_yellow_kpi(tmp_path: Path) -> None:
    env = _setup(tmp_path)
    never = kpiwatch(tmp_path, "ack", "nps", "--comment", "on it", env=env)
    assert never.returncode == 2
    assert "has not been evaluated yet" in never.stderr
    _set_status(tmp_path, Status.GREEN)
    green = kpiwatch(tmp_path, "ack", "nps", "--comment", "on it", env=env)
    assert green.returncode == 2
    assert "KPI 'nps' is green: only red or yellow can be acknowledged" in green.stderr

    since = _set_status(tmp_path, Status.RED)
    acked = kpiwatch(tmp_path, "ack", "nps", "--comment", "survey tool broken", env=env)
    assert acked.returncode == 0, acked.stderr
    assert (
        f"acknowledged nps: red since {since.isoformat()} by dana: survey tool broken"
        in acked.stdout
    )
    again = kpiwatch(tmp_path, "ack", "nps", "--comment", "vendor fixing", "--author", "kim",
                     env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "by kim: vendor fixing" in again.stdout
    shown = json.loads(kpiwatch(tmp_path, "status", "--json", env=env).stdout)
    assert shown[0]["ack"] == "kim: vendor fixing"  # the ack shows wherever the KPI does
    assert "[ack kim: vendor fixing]" in kpiwatch(tmp_path, "status", env=env).stdout

    unknown = kpiwatch(tmp_path, "ack", "np", "--comment", "x", env=env)
    assert unknown.returncode == 2
    assert "did you mean 'nps'?" in unknown.stderr
    missing = kpiwatch(tmp_path, "ack", "nps", env=env)
    assert missing.returncode == 2
    assert "--comment" in missing.stderr


def test_annotate(tmp_path: Path) -> None:
    env = _setup(tmp_path)
    now = kpiwatch(tmp_path, "annotate", "churn", "price change went live", env=env)
    assert now.returncode == 0, now.stderr
    assert "annotated churn at" in now.stdout
    assert now.stdout.rstrip().endswith(": price change went live")
    earlier = kpiwatch(tmp_path, "annotate", "churn", "campaign", "--at", "2026-01-05T08:00:00",
                       "--author", "kim", env=env)  # fmt: skip
    assert earlier.returncode == 0, earlier.stderr
    assert "annotated churn at 2026-01-05T08:00:00+00:00" in earlier.stdout
    bad_time = kpiwatch(tmp_path, "annotate", "churn", "x", "--at", "yesterday", env=env)
    assert bad_time.returncode == 2
    assert "invalid time 'yesterday'" in bad_time.stderr
    unknown = kpiwatch(tmp_path, "annotate", "chrun", "x", env=env)
    assert unknown.returncode == 2
    assert "no KPI 'chrun' in the rules; did you mean 'churn'?" in unknown.stderr
    empty = kpiwatch(tmp_path, "annotate", "churn", "  ", env=env)
    assert empty.returncode == 2
    assert "empty" in empty.stderr
