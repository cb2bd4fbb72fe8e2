"""The repository as a newcomer reads it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_MARKER = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)


def test_no_file_holds_a_merge_conflict_marker():
    """A merge left half-resolved shows in no document or source file."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    marked = [name for name in files if name.endswith((".md", ".py", ".toml", ".cfg", ".ini", ".txt"))
              and _MARKER.search((ROOT / name).read_text(errors="replace"))]
    assert marked == []
