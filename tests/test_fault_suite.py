"""Issue 18's fault suite (tests/fault_suite.py): every case, every invariant after it.

Kills, injected exceptions and ENOSPC, pre-placed links, colliding names, users' files at
output names, two drivers, changed settings; the counts are printed at the end of the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fault_suite


@pytest.mark.parametrize("case", list(fault_suite.all_cases()))
def test_fault_case(case: str, tmp_path: Path) -> None:
    fault_suite.run_case(case, tmp_path)
