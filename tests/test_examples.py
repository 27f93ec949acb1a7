"""The Python-API example runs as documented (a short training run)."""
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow  # trains in a subprocess
def test_quickstart_runs(tmp_path):
    png = tmp_path / "filters.png"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "3", str(png)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "parameters" in out and "test accuracy after 3 epochs" in out
    accuracy = float(out.split("test accuracy after 3 epochs:")[1].split()[0])
    assert accuracy > 0.8  # chance is 0.1
    assert "fit error at line 1, column 1" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
