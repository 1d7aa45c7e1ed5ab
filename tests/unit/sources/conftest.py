import sys
from pathlib import Path

# for local_http.py, the test HTTP server shared with tests/integration
sys.path.insert(0, str(Path(__file__).parents[2] / "integration"))
