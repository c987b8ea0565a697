"""A clone without the test data kit: pytest says so in one line instead of failing a hundred tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testkit import REPO


def test_without_the_kit_pytest_stops_in_one_line(tmp_path):
    env = {**os.environ, "UNIMISS_TEST_DATA": str(tmp_path / "nowhere")}
    proc = subprocess.run([sys.executable, "-m", "pytest", str(Path(__file__).with_name("test_mit.py")), "-q",
                           "-p", "no:cacheprovider"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert len(lines) == 1, lines
    assert f"{tmp_path / 'nowhere' / 'data'} lacks ct/lidc-idri-0001/image.nii.gz" in lines[0]
    assert "scripts/assemble_test_kit.py" in lines[0] and "UNIMISS_TEST_DATA" in lines[0]
