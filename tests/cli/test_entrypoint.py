"""`python -m allotment` is the same command as `allotment`."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_runs_the_allotment_command() -> None:
    """Where only the interpreter is on PATH, `python -m allotment` lists the same commands."""
    done = subprocess.run([sys.executable, "-m", "allotment", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Usage: allotment" in done.stdout and "migrate" in done.stdout
