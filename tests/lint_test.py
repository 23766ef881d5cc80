"""The code base passes its linter (ruff, configured in pyproject.toml)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_passes():
  result = subprocess.run([sys.executable, "-m", "ruff", "check", "kdjax", "launch", "configs",
                           "tests"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
