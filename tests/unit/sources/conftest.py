import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# for local_http.py, the test HTTP server shared with tests/integration
sys.path.insert(0, str(Path(__file__).parents[2] / "integration"))


@pytest.fixture
def fresh_python() -> Callable[[str], str]:
    """Runs code in a new interpreter and returns what it printed: for what a process
    imports (this one has every module the other tests loaded)."""

    def run(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run
