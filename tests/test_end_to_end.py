"""
The README's commands, run for real on the shared Persian data at a small size:
prepare.py -> train.py config/fawiki_small.py (one process and torchrun with two) ->
sample.py -> eval.py. Model size and step count are overridden so this takes seconds.
"""

import json
import os
import subprocess
import sys

import pytest
import regex

import eval as evaluate
from conftest import ROOT, shared_file

SMALL = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--batch_size=4",
         "--max_iters=6", "--eval_interval=3", "--eval_iters=2", "--log_interval=1",
         "--warmup_iters=2", "--peak_flops=1e11", "--device=cpu"]


def run(*args):
    result = subprocess.run([*args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    dump = shared_file("fawiki", "fawiki-sample-pages-articles.xml.bz2")
    paragraphs = shared_file("fawiki", "fawiki-bio-paragraphs.jsonl")
    out = tmp_path_factory.mktemp("e2e") / "data"
    run(sys.executable, "prepare.py", dump, paragraphs, f"--out_dir={out}", "--vocab_size=512",
        "--num_proc=2")
    return out


@pytest.fixture(scope="module")
def trained(data_dir):
    out = data_dir.parent / "out"
    run(sys.executable, "train.py", "config/fawiki_small.py", f"--data_dir={data_dir}",
        f"--out_dir={out}", *SMALL)
    return out


def test_prepare_writes_token_files(data_dir):
    meta = json.loads((data_dir / "meta.json").read_text())
    for split in ("train", "val"):
        size = os.path.getsize(data_dir / f"{split}.bin")
        assert size > 0 and size % 2 == 0  # uint16 tokens
    assert meta["vocab_size"] == 512


def evaluations(out_dir):
    """The evaluation records of a run's log.jsonl."""
    log = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    return [entry for entry in log if "val_loss" in entry]


def test_train_logs_and_checkpoints(trained):
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert (trained / "ckpt.pt").is_file()
    assert max(entry["iter"] for entry in log) == 6
    first, *_, last = [entry for entry in log if "val_loss" in entry]  # at steps 0, 3 and 6
    assert (first["iter"], last["iter"]) == (0, 6)
    assert last["train_loss"] < first["train_loss"] and last["val_loss"] < first["val_loss"]  # it learns


def test_torchrun_two_processes(data_dir):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = data_dir.parent / "out-ddp"
    run(torchrun, "--standalone", "--nproc_per_node=2", "train.py", "config/fawiki_small.py",
        f"--data_dir={data_dir}", f"--out_dir={out}", "--gradient_accumulation_steps=2", *SMALL)
    assert (out / "ckpt.pt").is_file()


def test_sample_writes_persian(trained):
    result = run(sys.executable, "sample.py", f"--out_dir={trained}", "--start=ایران کشوری است",
                 "--max_new_tokens=20", "--num_samples=1", "--seed=1")
    prompt, written = result.stdout.partition("ایران کشوری است")[1:]
    assert prompt and regex.search(r"\p{Arabic}", written)  # the prompt, then Persian text beyond it


def test_eval_reports_metrics(trained, data_dir):
    report = trained / "report.json"
    run(sys.executable, "eval.py", f"--out_dir={trained}", f"--data={data_dir / 'val.bin'}",
        f"--report={report}", "--rouge_docs=2", "--max_tokens=2000", "--prompt_tokens=8", "--reference_tokens=8")
    report = json.loads(report.read_text())
    results, examples = report["results"], report["generation"]["examples"]
    assert 0 < results["bits_per_byte"] < 8  # better than a uniform guess over bytes
    assert results["perplexity"] < 512  # better than a uniform guess over the vocabulary
    assert results["cross_entropy"] < evaluations(trained)[0]["val_loss"]  # below the untrained model's
    assert 0 <= results["rouge1"] <= 1
    assert report["generation"]["documents"] == len(examples) == 2
    assert any(regex.search(r"\p{Arabic}", example["generated"]) for example in examples)
    references, generated = [e["reference"] for e in examples], [e["generated"] for e in examples]
    assert results["rouge1"] == evaluate.rouge(references, generated)["rouge1"]
    assert results["chrf"] == evaluate.bleu_chrf(references, generated)[0]["chrf"] > 0
