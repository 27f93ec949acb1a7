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


def test_compare_torch_without_torch_says_how_to_install_it():
    """Without PyTorch the comparison script ends with one line saying what to install, not a
    ModuleNotFoundError traceback (torch is hidden in the child process)."""
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            "sys.argv = ['compare_torch.py', '--rounds', '1']; "
            f"runpy.run_path({str(ROOT / 'examples' / 'compare_torch.py')!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "pip install torch==2.13.0" in r.stderr
