"""The benchmarks' own machinery: stage timing and memory, and the synthetic full-size dump."""
import os
import random
import sys
from collections import Counter

import pytest

from conftest import PERSIAN, ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))

import bench_full_dump  # noqa: E402
import common  # noqa: E402
import measure  # noqa: E402
import study  # noqa: E402
import bpe  # noqa: E402
import wikitext  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="measure.py reads memory from /proc")


def test_stages_are_cut_at_marker_lines():
    program = ("import time\nprint('loading', flush=True)\ntime.sleep(0.5)\nprint('step two starts', flush=True)\n"
               "data = bytearray(200 * 2**20)\ntime.sleep(1.0)\nprint('done', flush=True)\n")
    run = measure.run_measured([sys.executable, "-c", program], first_stage="one",
                               markers=[("step two", "two"), ("done", "three")])
    names = [stage["name"] for stage in run["stages"]]
    assert names == ["one", "two", "three"]
    one, two, three = run["stages"]
    # the stages cut the run's time into consecutive pieces; a marker is seen only after it is printed,
    # so the sleeps before it bound the stages up to it from below, however fast or busy the machine
    assert min(one["seconds"], two["seconds"], three["seconds"]) >= 0
    assert one["seconds"] + two["seconds"] + three["seconds"] == pytest.approx(run["seconds"])
    assert one["seconds"] >= 0.5 and one["seconds"] + two["seconds"] >= 1.5
    assert two["peak_rss_all_processes_mb"] > 200 > one["peak_rss_all_processes_mb"]
    assert run["peak_rss_largest_process_mb"] > 200
    assert "step two starts" in run["log"]


def test_a_failing_command_is_a_one_line_error():
    with pytest.raises(common.UsageError, match="failed.*boom"):
        measure.run_measured([sys.executable, "-c", "raise SystemExit('boom')"])


def test_renamed_words_follow_the_growth_law():
    rng = random.Random(0)
    words = [f"واژه{'ابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهی'[i % 32]}{'ابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهی'[i // 32 % 32]}"
             f"{'ابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهی'[i // 1024]}" for i in range(20_000)]
    counts = Counter({word: 1 + rank % 7 for rank, word in enumerate(words)})
    taken = set(counts)
    distinct = len(counts)
    for copy in range(2, 6):
        rename = bench_full_dump.renames(rng, copy, counts, 0.7, taken)
        assert not set(rename) & {word for word, _ in counts.most_common(bench_full_dump.KEEP_FREQUENT)}
        assert len(set(rename.values())) == len(rename) and not set(rename.values()) & set(counts)
        distinct += len(rename)
        assert distinct == pytest.approx(len(counts) * copy ** 0.7, rel=1e-3)
    assert all(bench_full_dump.is_word(word) for word in rename.values())


@pytest.mark.parametrize("seed", range(5))
def test_the_cleaner_takes_the_synthetic_markup_off_again(seed):
    lines = PERSIAN + ["جمله‌ای کوتاه. جمله‌ای دیگر."]
    text = bench_full_dump.wikitext(random.Random(seed), lines)
    assert "<ref>" in text or "[[" in text
    assert bpe.normalize(wikitext.clean_wikitext(text)) == bpe.normalize("\n\n".join(lines))


def test_every_study_run_is_a_recipe_of_its_own_on_a_timed_shape():
    recipes = [(shape, tuple(sorted(overrides.split()))) for shape, overrides in study.RUNS.values()]
    assert len(set(recipes)) == len(recipes)
    assert {shape for shape, _ in recipes} <= set(study.SHAPES)
    # the size sweep makes no runs of the tweak shapes: each tweak's runs are named after the tweak
    assert not {f"{tweak}-relu2" for tweak in study.TWEAKS} & set(study.RUNS)
