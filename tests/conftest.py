import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU, skipped without one (pytest -m cuda runs only these)")


# Real Persian text lives beside the repository, never inside it.
SHARED_DATA = os.environ.get("SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))


def shared_file(*parts):
    """Path of a file under ../shared/data, or skip the test with the reason it is missing."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared data file not found: {path} (set SHARED_DATA to the data folder)")
    return path

# A few sentences of our own, with ZWNJ, Persian digits and punctuation.
PERSIAN = [
    "ایران کشوری در غرب آسیا است و پایتخت آن تهران است.",
    "می‌خواهم کتاب‌ها را بخوانم و به کتابخانه بروم.",
    "زبان فارسی با الفبای عربی نوشته می‌شود؛ «شاهنامه» را فردوسی سروده است.",
    "در سال ۱۴۰۲ جمعیت تهران بیش از نه میلیون نفر بود.",
]


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Toy models run fastest on one thread; several threads mostly wait for each other."""
    torch = sys.modules.get("torch")
    if torch is None:  # tests that never import torch need not pay for it
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
