import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import common
import train
from common import UsageError
from conftest import ROOT

TINY = os.path.join(ROOT, "config", "tiny.py")


def make_data(directory, train_tokens=None, vocab_size=32):
    """prepare.py's outputs in miniature: a repeating random sequence is learnable but not trivial."""
    os.makedirs(directory, exist_ok=True)
    pattern = np.random.default_rng(0).integers(0, vocab_size, size=61)
    if train_tokens is None:
        train_tokens = np.tile(pattern, 40)
    np.asarray(train_tokens, dtype=np.uint16).tofile(os.path.join(directory, "train.bin"))
    np.tile(pattern, 5).astype(np.uint16).tofile(os.path.join(directory, "val.bin"))
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump({"vocab_size": vocab_size}, f)
    with open(os.path.join(directory, "tokenizer.json"), "w") as f:
        f.write('{"version": "placeholder"}')
    return str(directory)


def run_train(*args):
    """train.py in this process (no interpreter start-up): config/tiny.py plus overrides."""
    config, _ = common.configure(train.DEFAULTS, [TINY, *args])
    train.train(config)


def read_log(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = {r["iter"]: r["loss"] for r in records if "loss" in r}
    evals = {r["iter"]: (r["train_loss"], r["val_loss"]) for r in records if "val_loss" in r}
    return steps, evals


def train_script(*args):
    return [sys.executable, os.path.join(ROOT, "train.py"), TINY, *args]


ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture
def data_dir(tmp_path):
    return make_data(tmp_path / "data")


def test_overfits_a_single_window(tmp_path):
    # 17 tokens hold exactly one window of block_size + 1: every batch is that window
    data = make_data(tmp_path / "data", train_tokens=np.random.default_rng(1).integers(0, 32, size=17))
    out = str(tmp_path / "out")
    run_train(f"--data_dir={data}", f"--out_dir={out}", "--max_iters=150", "--lr_schedule=constant",
              "--learning_rate=1e-2", "--eval_interval=1000", "--log_interval=10")
    steps, evals = read_log(out)
    assert steps[10] > 1.0
    assert steps[150] < 0.05
    assert evals[150][0] < 0.05  # the train split is that one window too


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_continues_exactly(tmp_path, data_dir, optimizer):
    # dropout on: the resumed run must also reproduce the random masks; Muon's momentum must be saved
    common_args = [f"--data_dir={data_dir}", "--dropout=0.1", "--lr_decay_iters=12",
                   "--eval_interval=4", "--always_save_checkpoint=True", f"--optimizer={optimizer}"]
    run_train(*common_args, f"--out_dir={tmp_path / 'straight'}", "--max_iters=12")
    stopped = str(tmp_path / "stopped")
    run_train(*common_args, f"--out_dir={stopped}", "--max_iters=6")
    assert torch.load(os.path.join(stopped, "ckpt.pt"), weights_only=True)["iter_num"] == 6
    run_train(*common_args, f"--out_dir={stopped}", "--max_iters=12", "--init_from=resume")
    straight_steps, straight_evals = read_log(tmp_path / "straight")
    resumed_steps, resumed_evals = read_log(stopped)
    assert sorted(resumed_steps) == list(range(1, 13))
    np.testing.assert_allclose([resumed_steps[i] for i in range(1, 13)],
                               [straight_steps[i] for i in range(1, 13)], rtol=1e-6)
    assert straight_evals.keys() == {0, 4, 8, 12}
    assert resumed_evals.keys() == {0, 4, 6, 8, 12}  # 6: the end of the first part
    for i in straight_evals:
        np.testing.assert_allclose(resumed_evals[i], straight_evals[i], rtol=1e-6)


def test_torchrun_matches_one_process(tmp_path, data_dir):
    # gradient_accumulation_steps is global: 2 processes x 2 micro-batches must follow the
    # same loss curve as 1 process x 4, up to float summation order (tolerance 1e-4).
    args = [f"--data_dir={data_dir}", "--gradient_accumulation_steps=4", "--max_iters=8",
            "--eval_interval=8"]
    run_train(*args, f"--out_dir={tmp_path / 'one'}")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", *train_script(*args, f"--out_dir={tmp_path / 'two'}")[1:]],
                            cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 process(es)" in result.stdout
    one, _ = read_log(tmp_path / "one")
    two, _ = read_log(tmp_path / "two")
    assert sorted(two) == list(range(1, 9))
    np.testing.assert_allclose([two[i] for i in range(1, 9)], [one[i] for i in range(1, 9)], atol=1e-4)
    assert one[8] < one[1] - 0.1  # and it did learn something


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(ROOT, "config"))))
def test_every_config_file_is_valid(name):
    config, positional = common.configure(train.DEFAULTS, [os.path.join(ROOT, "config", name)])
    assert not positional
    train.check_config(SimpleNamespace(**config))


@pytest.mark.parametrize("args,message", [
    (["--learnig_rate=0.1"], "unknown config key 'learnig_rate' in the command line; did you mean learning_rate"),
    (["--max_iters=abc"], "config key 'max_iters' in the command line expects int, got str"),
    (["--data_dir=/no/such/dir"], "data directory not found: /no/such/dir"),
    (["--lr_schedule=cosin"], "lr_schedule must be one of"),
    (["--gradient_accumulation_steps=0"], "gradient_accumulation_steps must be at least 1"),
    (["--pos_emb=alibi"], "pos_emb must be one of"),
    (["--optimizer=sgd"], "optimizer must be 'adamw' or 'muon', got 'sgd'"),
])
def test_config_errors_are_one_line(tmp_path, data_dir, args, message):
    with pytest.raises(UsageError) as error:
        run_train(f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}", *args)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "out" / "ckpt.pt")


def test_error_exits_without_traceback(tmp_path):
    result = subprocess.run(train_script(f"--data_dir={tmp_path / 'missing'}"), cwd=ROOT, env=ONE_THREAD,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: data directory not found: {tmp_path / 'missing'} " \
                                    "(run prepare.py, or set --data_dir)"


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_resume_refuses_a_broken_checkpoint(tmp_path, data_dir, damage):
    out = str(tmp_path / "out")
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=4", "--always_save_checkpoint=True")
    ckpt_path = os.path.join(out, "ckpt.pt")
    with open(ckpt_path, "rb") as f:
        data = f.read()
    broken = data[: len(data) // 3] if damage == "truncate" else b"\x00not a checkpoint" * 100
    with open(ckpt_path, "wb") as f:
        f.write(broken)
    log_before = open(os.path.join(out, "log.jsonl")).read()
    with pytest.raises(UsageError, match="cannot read checkpoint .*ckpt.pt"):
        run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=8", "--init_from=resume")
    assert open(ckpt_path, "rb").read() == broken  # nothing trained, nothing overwritten
    assert open(os.path.join(out, "log.jsonl")).read() == log_before


def test_resume_refuses_another_tokenizer(tmp_path, data_dir):
    out = str(tmp_path / "out")
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=2", "--always_save_checkpoint=True")
    with open(os.path.join(data_dir, "tokenizer.json"), "w") as f:
        f.write('{"version": "another"}')
    with pytest.raises(UsageError, match="another tokenizer"):
        run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--init_from=resume")


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    out = str(tmp_path / "out")
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=4", "--always_save_checkpoint=True")
    ckpt_path = os.path.join(out, "ckpt.pt")
    good = open(ckpt_path, "rb").read()
    with pytest.raises(UsageError, match=r"loss is (nan|inf) at step \d+: training diverged.*ckpt.pt"):
        run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--init_from=resume", "--max_iters=20",
                  "--learning_rate=1e30", "--lr_schedule=constant", "--eval_interval=100")
    assert open(ckpt_path, "rb").read() == good


def test_fine_tune_from_another_run(tmp_path, data_dir):
    base = str(tmp_path / "base")
    run_train(f"--data_dir={data_dir}", f"--out_dir={base}", "--max_iters=6", "--always_save_checkpoint=True")
    tuned = str(tmp_path / "tuned")
    run_train(f"--data_dir={data_dir}", f"--out_dir={tuned}", f"--init_from={base}/ckpt.pt",
              "--max_iters=4", "--eval_interval=4", "--block_size=8", "--n_layer=5")
    ckpt = torch.load(os.path.join(tuned, "ckpt.pt"), weights_only=True)
    assert ckpt["iter_num"] == 4  # a fresh schedule, not the base run's step count
    assert ckpt["model_args"]["block_size"] == 8 and ckpt["model_args"]["n_layer"] == 2
    _, base_evals = read_log(base)
    _, tuned_evals = read_log(tuned)
    assert tuned_evals[0][1] < base_evals[0][1]  # it starts from the trained weights


def test_sigterm_saves_a_resumable_checkpoint(tmp_path, data_dir):
    out = str(tmp_path / "out")
    args = [f"--data_dir={data_dir}", "--lr_decay_iters=1000", "--eval_interval=100000"]
    process = subprocess.Popen(train_script(*args, f"--out_dir={out}", "--max_iters=100000"),
                               cwd=ROOT, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log_path = os.path.join(out, "log.jsonl")
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.isfile(log_path) and open(log_path).read().count("\n") >= 3):
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "SIGTERM: saving after this step" in stderr
    stopped_at = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["iter_num"]
    assert f"stopped at step {stopped_at}" in stdout and stopped_at >= 2

    run_train(*args, f"--out_dir={out}", "--init_from=resume", f"--max_iters={stopped_at + 3}")
    run_train(*args, f"--out_dir={tmp_path / 'straight'}", f"--max_iters={stopped_at + 3}")
    resumed, _ = read_log(out)
    straight, _ = read_log(tmp_path / "straight")
    assert sorted(resumed) == list(range(1, stopped_at + 4))
    np.testing.assert_allclose([resumed[i] for i in sorted(straight)],
                               [straight[i] for i in sorted(straight)], rtol=1e-6)


def test_token_windows_are_reproducible_views_of_the_file(tmp_path, data_dir):
    tokens = common.load_tokens(os.path.join(data_dir, "train.bin"))
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    windows = train.TokenWindows(tokens, block_size=16, seed=3)
    assert len(windows) == len(tokens) - 16
    x, y = windows[5]
    assert x.tolist() == tokens[5:21].tolist() and y.tolist() == tokens[6:22].tolist()
    bx, by = windows.batch(8, 0, 7, 1)
    again_x, _ = windows.batch(8, 0, 7, 1)
    other_x, _ = windows.batch(8, 0, 8, 1)
    assert bx.shape == by.shape == (8, 16) and bx.dtype == torch.int64
    assert torch.equal(bx, again_x) and not torch.equal(bx, other_x)
    assert torch.equal(bx[:, 1:], by[:, :-1])
    with pytest.raises(UsageError, match="too few"):
        train.TokenWindows(tokens[:16], block_size=16)
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(UsageError, match="not a uint16 token file"):
        common.load_tokens(str(tmp_path / "odd.bin"))


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_learning_rate_schedule(schedule):
    config, _ = common.configure(train.DEFAULTS, [f"--lr_schedule={schedule}", "--warmup_iters=10",
                                                  "--max_iters=110", "--learning_rate=1.0", "--min_lr=0.1"])
    cfg = train.SimpleNamespace(**config)
    lrs = [train.get_lr(cfg, i, 0.0) for i in range(120)]
    assert lrs[0] == pytest.approx(1 / 11) and lrs[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:11], lrs[1:11]))  # warmup rises
    if schedule == "constant":
        assert lrs[110] == 1.0
    else:
        assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
        assert lrs[60] == pytest.approx(0.55)  # halfway: both shapes are at the midpoint
        assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    # a time budget ends the decay when it runs out, whatever the step count
    config["max_minutes"] = 1.0
    assert train.get_lr(train.SimpleNamespace(**config), 20, 60.0) == pytest.approx(0.1 if schedule != "constant" else 1.0)


@pytest.mark.parametrize("saved,resumed", [("bfloat16", "float16"), ("float16", "bfloat16"), ("float16", "float16")])
def test_resume_under_another_precision(tmp_path, data_dir, saved, resumed, capsys):
    # only fp16 keeps a loss scale: a change of precision must neither crash nor carry a stale one
    out = str(tmp_path / "out")
    args = [f"--data_dir={data_dir}", f"--out_dir={out}", "--eval_interval=4", "--always_save_checkpoint=True"]
    run_train(*args, f"--dtype={saved}", "--max_iters=4")
    assert bool(torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["scaler"]) == (saved == "float16")
    capsys.readouterr()
    run_train(*args, f"--dtype={resumed}", "--max_iters=8", "--init_from=resume")
    note = capsys.readouterr().err
    if saved == resumed:
        assert "note:" not in note
    else:
        assert f"ckpt.pt was trained {'without' if resumed == 'float16' else 'in float16 with'} " in note
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    assert ckpt["iter_num"] == 8 and bool(ckpt["scaler"]) == (resumed == "float16")
    steps, _ = read_log(out)
    assert sorted(steps) == list(range(1, 9)) and all(np.isfinite(list(steps.values())))


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989e12),
    ("NVIDIA GH200 480GB", 989e12), ("NVIDIA L4", 121e12), ("NVIDIA GeForce RTX 4090", 165e12),
    ("NVIDIA L40S", None), ("Tesla V100-SXM2-32GB", None), ("NVIDIA GeForce RTX 4090 D", None),
])
def test_datasheet_peak_by_gpu_name(name, peak):
    assert train.datasheet_peak_flops(name) == peak


def torchrun(*args, env=ONE_THREAD, timeout=120):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *train_script(*args)[1:]]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("fail_at", ["1:start:0", "0:eval:4", "1:step:3"])
def test_one_failing_process_stops_all_of_them(tmp_path, data_dir, fail_at):
    # start: rank 1 alone fails while loading; eval: rank 0 fails while evaluating and saving, as
    # on a full disk; step: rank 1 dies inside a training step, mid-collective. Left alone, the
    # others would wait for it until the collective's timeout (--ddp_timeout_minutes=10 here).
    started = time.time()
    result = torchrun(f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}", "--gradient_accumulation_steps=2",
                      "--max_iters=8", "--eval_interval=4", "--ddp_timeout_minutes=10",
                      env=dict(ONE_THREAD, TRAIN_FAIL_AT=fail_at))
    assert result.returncode != 0
    assert time.time() - started < 30
    failed_rank = fail_at.split(":")[0]
    message = f"RuntimeError: failure injected by TRAIN_FAIL_AT={fail_at}"
    assert message in result.stderr
    if not fail_at.startswith("1:step"):  # the other process heard it from the failed one
        other = 1 - int(failed_rank)
        assert (f"error: stopping because rank {failed_rank} on {socket.gethostname()} (node 0, "
                f"local rank {failed_rank}): {message}") in result.stderr, result.stderr[-3000:]
        assert f"[rank{other}]: Traceback" not in result.stderr


def test_every_process_checks_its_own_resume_checkpoint(tmp_path, data_dir):
    # on several nodes only the one with rank 0 writes ckpt.pt: each process must say where it is missing
    result = torchrun(f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}", "--gradient_accumulation_steps=2",
                      "--init_from=resume")
    assert result.returncode != 0
    for rank in (0, 1):
        assert (f"error: rank {rank} on {socket.gethostname()} (node 0, local rank {rank}): checkpoint not "
                f"found: {tmp_path / 'out' / 'ckpt.pt'}") in result.stderr
    assert "[rank0]: Traceback" not in result.stderr and "[rank1]: Traceback" not in result.stderr


# -----------------------------------------------------------------------------
# samples at every evaluation, and optional experiment tracking

def make_persian_data(directory):
    """prepare.py's outputs for a few Persian sentences, with a real tokenizer to write samples with."""
    from bpe import Tokenizer
    from conftest import PERSIAN
    os.makedirs(directory, exist_ok=True)
    tokenizer = Tokenizer.train(PERSIAN * 3, vocab_size=300,
                                normalization={"normalize_text": True, "remove_diacritics": True})
    ids = [i for text in PERSIAN * 10 for i in [tokenizer.eot_id] + tokenizer.encode(text)]
    np.array(ids, dtype=np.uint16).tofile(os.path.join(directory, "train.bin"))
    np.array(ids[:200], dtype=np.uint16).tofile(os.path.join(directory, "val.bin"))
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump({"vocab_size": tokenizer.vocab_size}, f)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    return str(directory), tokenizer


def read_records(out_dir):
    with open(os.path.join(out_dir, "log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_every_evaluation_writes_a_greedy_sample(tmp_path, capsys):
    import sample
    from model import load_checkpoint
    data, tokenizer = make_persian_data(tmp_path / "data")
    out = tmp_path / "out"
    run_train(f"--data_dir={data}", f"--out_dir={out}", "--sample_tokens=12", "--sample_prompt=ايران",
              "--always_save_checkpoint=True")  # Arabic yeh: normalised to ایران as the data was
    evals = [r for r in read_records(out) if "val_loss" in r]
    assert [r["iter"] for r in evals] == [0, 10, 20] and all(isinstance(r["sample"], str) for r in evals)
    model, _, _ = load_checkpoint(str(out / "ckpt.pt"), "cpu")  # the weights of the last evaluation
    prompt = [tokenizer.eot_id] + tokenizer.encode("ایران")
    new_ids = list(sample.generate(model, prompt, 12, greedy=True, stop_ids=(tokenizer.eot_id,)))
    assert evals[-1]["sample"] == tokenizer.decode(new_ids) and new_ids
    assert f"sample: ايران{evals[-1]['sample']}\n" in capsys.readouterr().out


def test_samples_can_be_turned_off(tmp_path):
    data, _ = make_persian_data(tmp_path / "data")
    run_train(f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", "--sample_tokens=0", "--max_iters=2")
    assert not [r for r in read_records(tmp_path / "out") if "sample" in r]


def wandb_history(wandb_dir):
    """{step: {key: value}} that an offline wandb run recorded. The .wandb file is a LevelDB-style
    log (a 7-byte file header, 32 KiB blocks of records, each with a 7-byte header: crc, length,
    type) of protobuf Records; wandb offers no reader of its own."""
    import glob
    import struct
    from wandb.proto import wandb_internal_pb2
    (path,) = glob.glob(os.path.join(wandb_dir, "wandb", "offline-run-*", "run-*.wandb"))
    with open(path, "rb") as f:
        data = f.read()
    history, position, parts = {}, 7, []
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if position + 7 + length > len(data):  # a record still being written
            break
        parts.append(data[position + 7:position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            if record.WhichOneof("record_type") == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                history.setdefault(items["_step"], {}).update(items)
    return history


def test_wandb_offline_run_gets_the_log(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install -r requirements-dev.txt)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    data, _ = make_persian_data(tmp_path / "data")
    out = tmp_path / "out"
    run_train(f"--data_dir={data}", f"--out_dir={out}", "--sample_tokens=6", "--wandb_log=True",
              "--wandb_project=persian-gpt-tests")
    for _ in range(300):  # wandb's service may still be writing the file when finish() returns
        history = wandb_history(tmp_path)
        if 20 in history and "val_loss" in history[20]:
            break
        time.sleep(0.1)
    expected = {}  # what the log says at each step; wandb too keeps the last value logged in a step
    for record in read_records(out):
        expected.setdefault(record["iter"], {}).update(record)
    assert sorted(history) == sorted(expected) == list(range(21))
    for step, record in expected.items():
        for key in ("loss", "val_loss", "train_loss", "lr", "tokens_per_s", "mfu", "grad_norm"):
            if key in record:
                assert history[step][key] == pytest.approx(record[key])
        if "val_loss" in record:
            assert history[step]["val_perplexity"] == pytest.approx(np.exp(record["val_loss"]))
            assert history[step]["sample"] == record["sample"]


def test_wandb_is_imported_only_when_asked_for(tmp_path):
    data, _ = make_persian_data(tmp_path / "data")
    code = ("import sys, common, train; config, _ = common.configure(train.DEFAULTS, sys.argv[1:]); "
            "train.train(config); print('wandb imported:', 'wandb' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, TINY, f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}",
                             "--max_iters=2"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert "wandb imported: False" in result.stdout
