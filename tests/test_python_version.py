"""Every script runs on Python 3.10 or newer: vermin, a static checker, finds nothing in the
scripts, bench/ or tests/ that needs a later Python (asyncio.timeout, except*, hashlib.file_digest,
...). Annotations are read as evaluated, since pydantic and FastAPI evaluate serve.py's."""
import glob
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("vermin", reason="vermin checks the Python version: pip install -r requirements-dev.txt")


def test_every_script_runs_on_python_3_10():
    files = sorted(os.path.relpath(path, ROOT) for pattern in ("*.py", "bench/*.py", "tests/*.py")
                   for path in glob.glob(os.path.join(ROOT, pattern)))
    assert "serve.py" in files and "tests/test_python_version.py" in files
    result = subprocess.run([sys.executable, "-c", "import sys; from vermin.main import main; sys.exit(main())",
                             "--target=3.10-", "--violations", "--no-tips", "--eval-annotations", *files],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
