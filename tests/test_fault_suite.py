"""Issue 18's fault suite (tests/fault_suite.py): every case, every invariant after it.

Kills, injected exceptions and ENOSPC, pre-placed links, colliding names, users' files at
output names, two drivers, changed settings. The suite runs in its own Python process (it patches
stages and writers and starts processes it kills; none of that should touch the test session),
one case after the other; its counts are printed at the end of the pytest run (conftest.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import thingmask

SUITE = Path(__file__).parent / "fault_suite.py"
COUNTS: dict[str, int] = {}  # read by conftest.pytest_terminal_summary


def test_every_fault_case_keeps_every_invariant(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(thingmask.__file__).parents[1])}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(SUITE)], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = re.search(r"fault suite: (\d+) cases, (\d+) invariant checks, all held", proc.stdout)
    assert found, proc.stdout[-2000:]
    cases, checks = int(found.group(1)), int(found.group(2))
    ran = [line for line in proc.stdout.splitlines() if line.startswith("ok  ")]
    assert cases == len(ran) >= 40 and checks > cases * 20
    COUNTS.update(cases=cases, invariants=checks)
