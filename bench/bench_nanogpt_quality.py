"""
Time to quality against nanoGPT: the minutes of this machine our default recipe
(config/fawiki_small.py) needs to reach the validation loss that nanoGPT's own train.py and
model.py reach in ten, both trained on the same train.bin and scored on the same validation batches.

    python bench/bench_nanogpt_quality.py time --nanogpt_dir=PATH   # both step times, side by side, alone
    python bench/bench_nanogpt_quality.py run --nanogpt_dir=PATH    # train it, score both (may share the CPU)

PATH is a checkout of github.com/karpathy/nanoGPT; its train.py, model.py and configurator.py are
copied into results_dir/nanogpt and run from there, on data_dir's train.bin and val.bin. As in
bench/study.py, minutes become steps: `time` measures nanoGPT's step time and ours, in alternating
rounds with the CPU to itself (2 threads), and `run` trains nanoGPT for exactly the steps `minutes`
buy, on one thread, so the run gives the same model whatever else the CPU is doing.

nanoGPT gets config/fawiki_small.py's recipe wherever its train.py has the same setting: the
shape, batch and accumulation, dropout, no biases, AdamW's LR, betas and weight decay, gradient
clipping, the warmup, and the cosine decay to min_lr over the run (nanoGPT's schedule, decayed
over the steps the budget buys, as ours decays over its budget). The rest is nanoGPT's own:
learned positions, GELU, LayerNorm, fp32 (its train.py has no autocast on a CPU). Ours is
bench/study.py's run of the same recipe for the steps ten minutes buy it, in the precision that
train.py's dtype=auto gives it: "l4-d128-relu2-bf16-timed" on a CPU with AMX, "l4-d128-relu2" (fp32)
elsewhere. Its log holds the validation loss every tenth of the run; the minutes ours needs are
read off it at the step time `time` measured beside nanoGPT's.

Both are scored on train.py's evaluation batches (the val windows TokenWindows draws with key
(1, k) for k < eval_iters, the batches of every validation loss in our log), nanoGPT's final model
through its own GPT class. The minutes ours needs come from its validation curve, interpolated
between evaluations, at its own step time.
"""

import importlib.util
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402
import train  # noqa: E402
from model import load_checkpoint  # noqa: E402

nanogpt_dir = ""  # a checkout of github.com/karpathy/nanoGPT (required)
config = "config/fawiki_small.py"  # our recipe, given to nanoGPT where its train.py has the setting
data_dir = "data/fawiki"  # prepare.py's output that both train on
results_dir = "bench/results/nanogpt_quality"  # nanoGPT's folder and run, step_ms.json, result.json
# ours: bench/study.py's run of the same recipe in the precision train.py's dtype=auto gives it here
# (bf16 on a CPU with AMX, for the more steps ten minutes buy it then); "" = that run
study_run = ""
minutes = 10.0  # nanoGPT's budget
steps = 20  # time: timed steps per round
rounds = 2  # time: rounds of nanoGPT then ours
warmup_steps = 3  # time: untimed first steps
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, str))}
SHARED = ("batch_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias", "learning_rate", "min_lr",
          "warmup_iters", "weight_decay", "beta1", "beta2", "grad_clip", "gradient_accumulation_steps")
NANOGPT_STEP = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", re.M)


def recipe(c):
    """Our config file's settings over train.py's defaults."""
    settings, _ = common.configure(train.DEFAULTS, [os.path.join(ROOT, c["config"])])
    return settings


def nanogpt_folder(c):
    """results_dir/nanogpt holding nanoGPT's scripts and data_dir's tokens laid out as nanoGPT reads them."""
    folder = os.path.join(ROOT, c["results_dir"], "nanogpt")
    data = os.path.join(folder, "data", "fawiki")
    os.makedirs(data, exist_ok=True)
    for name in ("train.py", "model.py", "configurator.py"):
        shutil.copy(os.path.join(c["nanogpt_dir"], name), folder)
    for split in ("train", "val"):
        shutil.copy(os.path.join(ROOT, c["data_dir"], f"{split}.bin"), data)
    with open(os.path.join(ROOT, c["data_dir"], "meta.json"), encoding="utf-8") as f:
        vocab_size = json.load(f)["vocab_size"]
    with open(os.path.join(data, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": vocab_size}, f)  # nanoGPT reads its vocabulary size from here
    return folder


def nanogpt_args(c, max_iters):
    settings = recipe(c)
    return ["train.py", *[f"--{key}={settings[key]}" for key in SHARED], "--dataset=fawiki", "--device=cpu",
            "--dtype=float32", "--compile=False", "--decay_lr=True", f"--max_iters={max_iters}",
            f"--lr_decay_iters={max_iters}", f"--eval_interval={max_iters}", "--eval_iters=1", "--log_interval=1",
            "--always_save_checkpoint=True", "--out_dir=out"]


def time_both(c):
    """nanoGPT's and our step times, alternating rounds (so a change in the machine's speed falls on
    both), each the median of its timed steps."""
    folder = nanogpt_folder(c)
    total = c["warmup_steps"] + c["steps"]
    ours_dir = os.path.join(ROOT, c["results_dir"], "ours-timing")
    ours = [os.path.join(ROOT, "train.py"), os.path.join(ROOT, c["config"]),
            f"--data_dir={os.path.join(ROOT, c['data_dir'])}", f"--out_dir={ours_dir}", "--max_minutes=0",
            "--sample_tokens=0", f"--max_iters={total}", "--log_interval=1", f"--eval_interval={total}",
            "--eval_iters=1"]
    times = {"nanogpt": [], "ours": []}
    for _ in range(c["rounds"]):
        result = subprocess.run([sys.executable, *nanogpt_args(c, total)], cwd=folder, capture_output=True, text=True,
                                check=True)
        steps = {int(i): float(ms) for i, ms in NANOGPT_STEP.findall(result.stdout)}
        times["nanogpt"] += [steps[i] for i in sorted(steps) if c["warmup_steps"] <= i < total]
        subprocess.run([sys.executable, *ours], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(ours_dir, "log.jsonl"), encoding="utf-8") as f:
            times["ours"] += [r["step_ms"] for r in map(json.loads, f) if "loss" in r][c["warmup_steps"]:]
    step_ms = {name: statistics.median(values) for name, values in times.items()}
    path = os.path.join(ROOT, c["results_dir"], "step_ms.json")
    with common.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(step_ms, f)
    print(f"nanoGPT: {step_ms['nanogpt']:,.0f} ms/step; ours: {step_ms['ours']:,.0f} ms/step; wrote {path}")


def eval_batches(c, block_size):
    settings = recipe(c)
    windows = train.TokenWindows(common.load_tokens(os.path.join(ROOT, c["data_dir"], "val.bin")), block_size,
                                 settings["seed"])
    # contiguous: nanoGPT's loss views its targets flat, and TokenWindows' x and y are views of one block
    return [tuple(t.contiguous() for t in windows.batch(settings["batch_size"], 1, k))
            for k in range(settings["eval_iters"])]


@torch.no_grad()
def nanogpt_val_loss(c, folder):
    """nanoGPT's checkpoint scored on train.py's evaluation batches, through nanoGPT's own GPT."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", os.path.join(folder, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = torch.load(os.path.join(folder, "out", "ckpt.pt"), map_location="cpu", weights_only=True)
    model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return statistics.mean(model(x, y)[1].item() for x, y in eval_batches(c, model.config.block_size)), ckpt["iter_num"]


@torch.no_grad()
def our_val_loss(c):
    model, _, _ = load_checkpoint(os.path.join(ROOT, c["study_run"]), "cpu")
    return statistics.mean(model(x, y)[1].item() for x, y in eval_batches(c, model.config.block_size))


def minutes_to_reach(curve, target, step_ms):
    """The minutes at which the validation curve [(step, loss)] first reaches target, interpolated
    linearly between evaluations; None if it never does."""
    for (step_a, loss_a), (step_b, loss_b) in zip(curve, curve[1:]):
        if loss_b <= target:
            step = step_a + (step_b - step_a) * (loss_a - target) / (loss_a - loss_b) if loss_a > target else step_a
            return step * step_ms / 60_000
    return None


def run_nanogpt(c):
    path = os.path.join(ROOT, c["results_dir"], "step_ms.json")
    if not os.path.isfile(path):
        raise common.UsageError(f"{path} not found: run `python bench/bench_nanogpt_quality.py time` first, alone")
    with open(path, encoding="utf-8") as f:
        step_ms = json.load(f)
    peer_ms, our_ms = step_ms["nanogpt"], step_ms["ours"]
    folder, settings = nanogpt_folder(c), recipe(c)
    max_iters = int(c["minutes"] * 60_000 / peer_ms)
    ckpt_path = os.path.join(folder, "out", "ckpt.pt")
    trained = os.path.isfile(ckpt_path) and torch.load(ckpt_path, weights_only=True)["iter_num"] == max_iters
    if not trained:  # a run that stopped after training is scored without training again
        with open(os.path.join(folder, "train.log"), "w", encoding="utf-8") as log:
            subprocess.run([sys.executable, *nanogpt_args(c, max_iters)], cwd=folder, stdout=log,
                           stderr=subprocess.STDOUT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    peer_loss, peer_steps = nanogpt_val_loss(c, folder)
    with open(os.path.join(ROOT, c["study_run"], "log.jsonl"), encoding="utf-8") as f:
        curve = [(r["iter"], r["val_loss"]) for r in map(json.loads, f) if "val_loss" in r]
    ours_final, best = our_val_loss(c), min(loss for _, loss in curve)  # its checkpoint: the best evaluation
    if abs(ours_final - best) > 1e-3:
        raise RuntimeError(f"ours scores {ours_final:.4f} here but {best:.4f} in its log: not the same batches")
    needed = minutes_to_reach(curve, peer_loss, our_ms)
    result = {"minutes": c["minutes"], "nanogpt": {"step_ms": peer_ms, "steps": peer_steps, "val_loss": peer_loss},
              "ours": {"step_ms": our_ms, "steps": curve[-1][0], "val_loss": ours_final, "curve": curve,
                       "minutes_to_nanogpt_loss": needed},
              "recipe": {key: settings[key] for key in SHARED}}
    path = os.path.join(ROOT, c["results_dir"], "result.json")
    with common.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(f"nanoGPT: {peer_steps} steps ({peer_ms:,.0f} ms each), val loss {peer_loss:.4f}")
    print(f"ours: {curve[-1][0]} steps ({our_ms:,.0f} ms each), val loss {ours_final:.4f}")
    print(f"ours reaches nanoGPT's {c['minutes']:g}-minute loss after "
          f"{'never' if needed is None else f'{needed:.1f} minutes'}; wrote {path}")


def main():
    c, positional = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    commands = {"time": time_both, "run": run_nanogpt}
    if len(positional) != 1 or positional[0] not in commands or not c["nanogpt_dir"]:
        raise common.UsageError("give `time` or `run`, and --nanogpt_dir=PATH (a checkout of karpathy/nanoGPT)")
    run = "l4-d128-relu2-bf16-timed-10m" if train.cpu_has_amx() else "l4-d128-relu2-10m"
    c["study_run"] = c["study_run"] or os.path.join("bench", "results", "study", run)
    commands[positional[0]](c)


if __name__ == "__main__":
    common.run(main)
