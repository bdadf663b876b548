import itertools
import json
import os
import re
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
from model import GPT, GPTConfig

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
    # the model it describes can be built (GPTConfig checks its shape and choices), with the optimizer it names
    model_args = {field: config[field] for field in GPTConfig.__dataclass_fields__ if field != "vocab_size"}
    model = GPT(GPTConfig(**{**model_args, "n_layer": 1}))  # one layer is enough for the checks
    model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", config["optimizer"])


@pytest.mark.parametrize("args,message", [
    (["--learnig_rate=0.1"], "unknown config key 'learnig_rate' in the command line; did you mean learning_rate"),
    (["--max_iters=abc"], "config key 'max_iters' in the command line expects int, got str"),
    (["--data_dir=/no/such/dir"], "data directory not found: /no/such/dir"),
    (["--lr_schedule=cosin"], "lr_schedule must be 'cosine', 'linear' or 'constant', got 'cosin'"),
    (["--gradient_accumulation_steps=0"], "gradient_accumulation_steps must be at least 1"),
    (["--max_minutes=-1"], "max_minutes must be at least 0"),
    (["--pos_emb=alibi"], "pos_emb must be 'rope' or 'learned', got 'alibi'"),
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


@pytest.mark.parametrize("name", ["train.bin", "val.bin", "meta.json", "tokenizer.json"])
def test_a_missing_data_file_is_named_in_one_line(tmp_path, data_dir, name):
    os.remove(os.path.join(data_dir, name))
    with pytest.raises(UsageError, match=f"{re.escape(os.path.join(data_dir, name))} .*run prepare.py") as error:
        run_train(f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}")
    assert "\n" not in str(error.value) and not os.path.exists(tmp_path / "out")


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


def test_fine_tune_from_another_run(tmp_path, data_dir, capsys):
    base = str(tmp_path / "base")
    run_train(f"--data_dir={data_dir}", f"--out_dir={base}", "--max_iters=6", "--always_save_checkpoint=True")
    tuned = str(tmp_path / "tuned")
    run_train(f"--data_dir={data_dir}", f"--out_dir={tuned}", f"--init_from={base}/ckpt.pt",
              "--max_iters=4", "--eval_interval=4", "--block_size=8", "--n_layer=5")
    assert "note: cropping the context from 16 to block_size 8 tokens" in capsys.readouterr().err
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


def test_a_checkpoint_is_saved_when_val_loss_improves_also_after_resuming(tmp_path, data_dir, monkeypatch, capsys):
    # evaluations at steps 0, 2 and 4; resumed from step 2's checkpoint, at 4, 6 and 8
    val_losses, evaluate = iter([9.0, 5.0, 6.0, 5.2, 4.0, 4.5]), train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda *args: {**evaluate(*args), "val_loss": next(val_losses)})
    out = tmp_path / "out"
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=2")
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert (ckpt["iter_num"], ckpt["best_val_loss"]) == (2, 5.0)  # not step 4's worse 6.0
    capsys.readouterr()
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=8", "--eval_interval=2",
              "--init_from=resume")
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert (ckpt["iter_num"], ckpt["best_val_loss"]) == (6, 4.0)
    saves = [line for line in capsys.readouterr().out.splitlines() if line.startswith("saved ")]
    assert len(saves) == 1  # at step 6: 5.2 at step 4 is still worse than the 5.0 resumed


def test_resuming_with_another_optimizer_is_refused(tmp_path, data_dir):
    out = tmp_path / "out"
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=2", "--always_save_checkpoint=True")
    with pytest.raises(UsageError, match="was trained with another optimizer"):
        run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--init_from=resume", "--optimizer=muon")


def test_accumulation_must_divide_among_the_processes(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it (without RANK: no process group is joined)
    with pytest.raises(UsageError, match=r"gradient_accumulation_steps \(3\) must be divisible by the number of "
                                         r"processes \(2\)"):
        run_train(f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}", "--gradient_accumulation_steps=3")


def test_a_stop_on_an_evaluation_step_evaluates_first(tmp_path, data_dir, monkeypatch, capsys):
    # a stop asked for during step 4, whose end is an evaluation: the run evaluates, then saves once and stops
    calls, share_step = itertools.count(1), train.share_step
    monkeypatch.setattr(train, "share_step",
                        lambda run, loss, stop, seconds: share_step(run, loss, next(calls) == 4, seconds))
    out = tmp_path / "out"
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=100", "--eval_interval=4")
    records = read_records(out)
    assert records[-1]["iter"] == 4 and "val_loss" in records[-1]
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 4
    saves = [line for line in capsys.readouterr().out.splitlines() if "saved" in line]
    assert len(saves) == 1 and saves[0].startswith("stopped at step 4; saved")


def test_token_windows_are_reproducible_views_of_the_file(tmp_path, data_dir):
    tokens = common.load_tokens(os.path.join(data_dir, "train.bin"))
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    windows = train.TokenWindows(tokens, block_size=16, seed=3)
    bx, by = windows.batch(8, 0, 7, 1)
    # the windows start where a generator seeded with (seed, *key) says, anywhere a whole window fits
    starts = np.random.default_rng((3, 0, 7, 1)).integers(0, len(tokens) - 16, size=8)
    assert bx.tolist() == [tokens[s:s + 16].tolist() for s in starts]
    assert by.tolist() == [tokens[s + 1:s + 17].tolist() for s in starts]
    two_x, _ = train.TokenWindows(tokens[:18], block_size=16).batch(64, 0)  # room for windows at 0 and 1 only
    assert {tuple(row) for row in two_x.tolist()} == {tuple(tokens[0:16].tolist()), tuple(tokens[1:17].tolist())}
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
    cfg = SimpleNamespace(**config)
    lrs = [train.get_lr(cfg, i, 0.0) for i in range(120)]
    assert lrs[0] == pytest.approx(1 / 11) and lrs[4] == pytest.approx(5 / 11) and lrs[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:11], lrs[1:11]))  # warmup rises
    if schedule == "constant":
        assert lrs[110] == 1.0
    else:
        assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
        assert lrs[60] == pytest.approx(0.55)  # halfway: both shapes are at the midpoint
        assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    # a quarter and three quarters of the way through the decay, where the shapes part, by hand:
    # cosine 0.1 + 0.9 * (1 + cos(pi/4)) / 2 and 0.1 + 0.9 * (1 - cos(pi/4)) / 2; linear 0.1 + 0.9 * 3/4 and 1/4
    part_way = {"cosine": (0.868198052, 0.231801948), "linear": (0.775, 0.325), "constant": (1.0, 1.0)}[schedule]
    assert (lrs[35], lrs[85]) == pytest.approx(part_way, abs=1e-9)
    # a time budget ends the decay when it runs out, whatever the step count; a quarter of it
    # spent at step 20 (a tenth of the steps) is a quarter of the decay
    config["max_minutes"] = 1.0
    assert train.get_lr(SimpleNamespace(**config), 20, 60.0) == pytest.approx(0.1 if schedule != "constant" else 1.0)
    assert train.get_lr(SimpleNamespace(**config), 20, 15.0) == pytest.approx(part_way[0], abs=1e-9)


@pytest.mark.parametrize("grad_clip,moved", [(1.0, 0.5), (0.0, 0.5 * 2 * 15 ** 0.5), (100.0, 0.5 * 2 * 15 ** 0.5)])
def test_optimizer_step_clips_the_gradient_norm(grad_clip, moved):
    # SGD moves the parameters by lr x their gradient: clipped to grad_clip, the move has norm lr x grad_clip
    layer = torch.nn.Linear(4, 3)  # 15 parameters
    before = torch.cat([p.detach().flatten() for p in layer.parameters()])
    for p in layer.parameters():
        p.grad = torch.full_like(p, 2.0)  # global norm 2 * sqrt(15)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    norm = train.optimizer_step(layer, [optimizer], torch.amp.GradScaler("cpu", enabled=False), 0.5, grad_clip)
    after = torch.cat([p.detach().flatten() for p in layer.parameters()])
    assert norm.item() == pytest.approx(2 * 15 ** 0.5)  # the norm before clipping, as the log reports it
    assert (after - before).norm().item() == pytest.approx(moved, rel=1e-5)
    assert optimizer.param_groups[0]["lr"] == 0.5 and all(p.grad is None for p in layer.parameters())


def test_grad_clip_reaches_training(tmp_path, data_dir):
    def losses(grad_clip):
        out = tmp_path / f"clip-{grad_clip}"
        run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=8", "--eval_interval=100",
                  f"--grad_clip={grad_clip}")
        steps, _ = read_log(out)
        return [steps[i] for i in range(1, 9)]

    unclipped = losses(0.0)
    np.testing.assert_allclose(losses(1e9), unclipped, rtol=1e-6)  # a bound never reached changes nothing
    clipped = losses(1e-3)  # a bound every step reaches changes AdamW's moments, so the curve
    assert not np.allclose(clipped, unclipped, rtol=1e-4)


@pytest.mark.parametrize("log_interval", [1, 1000])  # 1000: the budget's last step is logged all the same
def test_time_budget_stops_the_loop(tmp_path, data_dir, monkeypatch, log_interval):
    # A fake clock, each reading one second after the last: the loop must stop at the first step
    # that brings the training time it adds up to max_minutes (6 s), long before max_iters.
    clock = itertools.count(1000.0)
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    out = tmp_path / "out"
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_minutes=0.1", "--max_iters=200",
              "--eval_interval=1000", f"--log_interval={log_interval}")
    records = read_records(out)
    steps = [r for r in records if "loss" in r]
    assert steps[-1]["train_s"] >= 6 and steps[-1]["iter"] < 200
    if log_interval == 1:
        assert steps[-2]["train_s"] < 6  # the first step to reach the budget is the last
    assert "val_loss" in records[-1] and records[-1]["iter"] == steps[-1]["iter"]  # the budget's end is evaluated
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["iter_num"] == steps[-1]["iter"] and ckpt["train_seconds"] == steps[-1]["train_s"]


def test_step_times_count_the_optimizer_and_not_the_logging(tmp_path, data_dir, monkeypatch):
    # an update that takes 0.2 s and a log line that takes 1 s: a step lasts 0.2 s and more, never 1 s
    optimizer_step, log_step = train.optimizer_step, train.TrainingLog.step
    monkeypatch.setattr(train, "optimizer_step", lambda *args: time.sleep(0.2) or optimizer_step(*args))
    monkeypatch.setattr(train.TrainingLog, "step", lambda *args: time.sleep(1.0) or log_step(*args))
    out = tmp_path / "out"
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=4", "--log_interval=1", "--eval_interval=100")
    steps = [r for r in read_records(out) if "loss" in r]
    # each step is timed with the update before it (the first has none)
    assert len(steps) == 4 and all(0.2 <= r["step_ms"] / 1000 < 1.0 for r in steps[1:])


def crash_at_step(step, get_lr):
    """get_lr, which every process calls at the start of each step, but failing at `step`."""
    def failing_get_lr(cfg, iter_num, train_seconds):
        if iter_num == step:
            raise RuntimeError(f"failure injected at step {step}")
        return get_lr(cfg, iter_num, train_seconds)
    return failing_get_lr


def test_resume_drops_log_records_past_the_checkpoint(tmp_path, data_dir, monkeypatch):
    # A run that crashes at step 10 has logged steps 9 and 10 past its last checkpoint (step 8),
    # the last line perhaps cut off; resumed, its log must read as one uninterrupted run.
    args = [f"--data_dir={data_dir}", "--eval_interval=4", "--always_save_checkpoint=True", "--max_iters=12"]
    run_train(*args, f"--out_dir={tmp_path / 'straight'}")
    out = tmp_path / "crashed"
    with monkeypatch.context() as patch:
        patch.setattr(train, "get_lr", crash_at_step(10, train.get_lr))
        with pytest.raises(RuntimeError, match="failure injected at step 10"):
            run_train(*args, f"--out_dir={out}")
    assert [r["iter"] for r in read_records(out) if "loss" in r] == list(range(1, 11))
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 8
    with open(out / "log.jsonl", "a") as f:
        f.write('{"iter": 11, "loss": 3.4')  # a line the crash cut off
    run_train(*args, f"--out_dir={out}", "--init_from=resume")
    resumed, straight = read_records(out), read_records(tmp_path / "straight")
    assert [r["iter"] for r in resumed if "loss" in r] == list(range(1, 13))
    assert [r["iter"] for r in resumed if "val_loss" in r] == [0, 4, 8, 12]
    np.testing.assert_allclose([r["loss"] for r in resumed if "loss" in r],
                               [r["loss"] for r in straight if "loss" in r], rtol=1e-6)


@pytest.mark.parametrize("measured_later", [1e3, 1e15])
def test_mfu_never_passes_100_percent(tmp_path, data_dir, monkeypatch, capsys, measured_later):
    # The start-up measurement of the peak comes out far too low, as on a busy machine. Measured
    # again when MFU would pass 100%, it is still too low (1e3: the model's own rate becomes the
    # peak) or right (1e15).
    calls = []

    def measure_peak_flops(device, dtype):
        calls.append(device)
        return 1e3 if len(calls) == 1 else measured_later

    monkeypatch.setattr(train, "measure_peak_flops", measure_peak_flops)
    out = tmp_path / "out"
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--peak_flops=0", "--max_iters=6")
    records = read_records(out)
    steps = [r for r in records if "mfu" in r]
    assert records[0]["peak_flops"] == 1e3 and len(steps) == 6
    assert all(0 < r["mfu"] <= 1 for r in steps)
    assert all(float(mfu) <= 100 for mfu in re.findall(r"mfu ([\d.]+)%", capsys.readouterr().out))
    peaks = [r["peak_flops"] for r in steps]
    assert peaks == sorted(peaks) and peaks[0] > 1e3  # measured again at the first log line, never lowered
    if measured_later == 1e15:
        assert len(calls) == 2 and peaks == [1e15] * 6
    else:  # measured again each time the model beats its best rate so far, which becomes the peak
        assert steps[0]["mfu"] == 1.0 and len(calls) == 1 + sum(r["mfu"] == 1.0 for r in steps)


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


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_on_a_cpu_is_bf16_only_with_amx(tmp_path, data_dir, monkeypatch, amx):
    monkeypatch.setattr(train, "cpu_has_amx", lambda: amx)
    out = tmp_path / "out"
    run_train(f"--data_dir={data_dir}", f"--out_dir={out}", "--dtype=auto", "--max_iters=4", "--eval_interval=4")
    with open(out / "log.jsonl") as f:
        assert json.loads(f.readline())["dtype"] == ("bfloat16" if amx else "float32")
    steps, evals = read_log(out)
    assert sorted(steps) == [1, 2, 3, 4] and evals[4][1] < evals[0][1]  # it learns in either precision


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989e12),
    ("NVIDIA GH200 480GB", 989e12), ("NVIDIA L4", 121e12), ("NVIDIA GeForce RTX 4090", 165e12),
    ("NVIDIA L40S", None), ("Tesla V100-SXM2-32GB", None), ("NVIDIA GeForce RTX 4090 D", None),
])
def test_datasheet_peak_by_gpu_name(name, peak):
    assert train.datasheet_peak_flops(name) == peak


def torchrun(*args, script=os.path.join(ROOT, "train.py"), timeout=120):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, TINY, *args]
    return subprocess.run(command, cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True, timeout=timeout)


# train.py with one process made to fail, as a full disk or CUDA running out of memory would:
# at "start" while reading the data, at "eval" while saving the checkpoint (the only torch.save
# of a CPU run), at "step" 3
FAILING_TRAIN = """
import os, sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
import torch
import common, train
from test_train import crash_at_step

def fail(*args):
    raise RuntimeError("failure injected at {where}")

if os.environ["RANK"] == "{rank}":
    if "{where}" == "start":
        train.read_data_dir = fail
    elif "{where}" == "eval":
        torch.save = fail
    else:
        train.get_lr = crash_at_step(3, train.get_lr)
common.run(train.main)
"""


@pytest.mark.parametrize("failed_rank,where", [(1, "start"), (0, "eval"), (1, "step")])
def test_one_failing_process_stops_all_of_them(tmp_path, data_dir, failed_rank, where):
    # start: rank 1 alone fails while loading; eval: rank 0 fails while evaluating and saving, as
    # on a full disk; step: rank 1 dies inside a training step, mid-collective. Left alone, the
    # others would wait for it until the collective's timeout (--ddp_timeout_minutes=10 here).
    script = tmp_path / "failing_train.py"
    script.write_text(FAILING_TRAIN.format(root=ROOT, tests=os.path.dirname(__file__), rank=failed_rank, where=where))
    result = torchrun(f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}", "--gradient_accumulation_steps=2",
                      "--max_iters=8", "--eval_interval=4", "--ddp_timeout_minutes=10", script=str(script))
    assert result.returncode != 0
    message = f"RuntimeError: failure injected at {'step 3' if where == 'step' else where}"
    assert message in result.stderr
    # the other process stopped because of the failure, not at the end of a collective's timeout
    assert "timed out" not in result.stderr.lower() and "timeout" not in result.stderr.lower()
    if where != "step":  # the other process heard it from the failed one
        other = 1 - failed_rank
        assert (f"error: stopping because rank {failed_rank} on {socket.gethostname()} (node 0, "
                f"local rank {failed_rank}): {message}") in result.stderr, result.stderr[-3000:]
        assert f"[rank{other}]: Traceback" not in result.stderr
    else:  # the gradient all-reduce lost its peer at once (gloo), or torchrun stopped the survivor
        assert "Connection closed by peer" in result.stderr or "closing signal SIGTERM" in result.stderr


def test_every_process_checks_its_own_resume_checkpoint(tmp_path, data_dir):
    # on several nodes only the one with rank 0 writes ckpt.pt: each process must say where it is missing
    result = torchrun(f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}", "--gradient_accumulation_steps=2",
                      "--init_from=resume")
    assert result.returncode != 0
    for rank in (0, 1):
        assert (f"error: rank {rank} on {socket.gethostname()} (node 0, local rank {rank}): no checkpoint "
                f"at {tmp_path / 'out' / 'ckpt.pt'}") in result.stderr
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
