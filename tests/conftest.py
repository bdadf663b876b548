import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Real Persian text lives beside the repository, never inside it.
SHARED_DATA = os.environ.get("SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))


def shared_file(*parts):
    """Path of a file under ../shared/data, or skip the test with the reason it is missing."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared data file not found: {path} (set SHARED_DATA to the data folder)")
    return path
