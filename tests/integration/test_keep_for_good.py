"""The App the daemon runs hides its rules from the cyclic collector (``gc.freeze``) only
when the process asks, and a reload lets the old rules go."""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import pytest

from kpiwatch.config.settings import Settings
from kpiwatch.runtime.app import App

RULES = """
kpis:
  - {id: signups, name: Signups, owner: ava@example.com, direction: higher_is_better,
     source: push, every: 1m, thresholds: {red: 10}}
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("KPIWATCH_")]:
        monkeypatch.delenv(name)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "kpis.yaml").write_text(RULES)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/state.db",
                        rules_dir=tmp_path / "rules")  # fmt: skip
    app = App(settings)
    yield app  # type: ignore[misc]
    app.close()
    gc.unfreeze()  # the rest of this test process is not a daemon


def test_only_the_process_that_keeps_the_app_freezes(app: App, tmp_path: Path) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0  # building the App froze nothing (tests build many)

    cycle: list[object] = [app.runner.workspace]  # as a connection pool's would hold it
    cycle.append(cycle)
    old = weakref.ref(app.runner.workspace)
    del cycle
    app.keep_for_good()
    assert gc.get_freeze_count() > 0

    (tmp_path / "rules" / "kpis.yaml").write_text(RULES.replace("Signups", "Sign-ups"))
    assert app.reload()
    assert old() is None  # unfrozen and collected, not kept for good
    assert app.runner.workspace.rules.kpis[0].name == "Sign-ups"
    assert gc.get_freeze_count() > 0  # the new rules are kept instead
