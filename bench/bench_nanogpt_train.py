"""
Training throughput against nanoGPT's own train.py, side by side in one run: both train the same
shape (6 layers, 6 heads, 384 wide, context 256, batch 16, vocab 16,384, no biases, no dropout,
fp32 on the CPU, no compile) on the same random tokens, in turns (ours, nanoGPT's, ours, ...),
and each step's time is read from the script's own log.

    python bench/bench_nanogpt_train.py --nanogpt_dir=/path/to/nanoGPT      # a checkout of karpathy/nanoGPT
    python bench/bench_nanogpt_train.py --nanogpt_dir=... --steps=3 --rounds=1 --n_layer=1   # a quick check

nanoGPT's train.py, model.py and configurator.py are copied into a temporary folder and run from
there, with its data as it expects it (data/<dataset>/train.bin, val.bin and meta.pkl). Its step
time, printed as "iter k: ... time t ms", runs from the end of one step to the end of the next, so
it includes fetching the batch and the optimizer's update; ours (log.jsonl's step_ms) does too.
"""

import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_train  # noqa: E402
import common  # noqa: E402

SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "vocab_size")
DEFAULTS = {
    "nanogpt_dir": "",  # a checkout of github.com/karpathy/nanoGPT (required)
    **{key: bench_train.DEFAULTS[key] for key in SHAPE_KEYS},  # the shape bench_train.py measures
    "steps": 10,  # timed steps per run
    "warmup_steps": 3,  # untimed first steps (the first also holds the evaluation at step 0)
    "rounds": 2,  # runs of each script, in turns
}
NANOGPT_STEP = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", re.M)


def run(args, cwd):
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        raise common.UsageError(f"{args[0]} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return result.stdout


def shape_args(c):
    return [f"--{k}={c[k]}" for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size")]


def ours(c, data, out):
    run(["train.py", *shape_args(c), f"--data_dir={data}", f"--out_dir={out}", "--device=cpu", "--compile=False",
         "--dtype=float32", "--dropout=0.0", "--bias=False", "--gradient_accumulation_steps=1",
         f"--max_iters={c['warmup_steps'] + c['steps']}",
         "--log_interval=1", "--eval_interval=1000000", "--eval_iters=1", "--sample_tokens=0"], ROOT)
    with open(os.path.join(out, "log.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [r["step_ms"] for r in records if "loss" in r][c["warmup_steps"]:]


def nanogpt(c, folder):
    stdout = run(["train.py", *shape_args(c), "--dataset=bench", "--device=cpu", "--compile=False", "--dtype=float32",
                  "--dropout=0.0", "--bias=False", "--gradient_accumulation_steps=1",
                  f"--max_iters={c['warmup_steps'] + c['steps']}", "--log_interval=1", "--eval_interval=1000000",
                  "--eval_iters=1", "--always_save_checkpoint=False", "--out_dir=out"], folder)
    times = {int(i): float(ms) for i, ms in NANOGPT_STEP.findall(stdout)}
    return [times[i] for i in sorted(times) if c["warmup_steps"] <= i < c["warmup_steps"] + c["steps"]]


def main():
    c, positional = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    if positional or not c["nanogpt_dir"]:
        raise common.UsageError("give --nanogpt_dir=PATH, a checkout of karpathy/nanoGPT")
    with tempfile.TemporaryDirectory() as tmp:
        data, peer = os.path.join(tmp, "data"), os.path.join(tmp, "nanogpt")
        os.makedirs(os.path.join(peer, "data", "bench"))
        os.makedirs(data)
        for name in ("train.py", "model.py", "configurator.py"):
            shutil.copy(os.path.join(c["nanogpt_dir"], name), peer)
        rng = np.random.default_rng(0)
        for split, size in (("train", 2_000_000), ("val", 100_000)):
            tokens = rng.integers(0, c["vocab_size"], size=size).astype(np.uint16)
            tokens.tofile(os.path.join(data, f"{split}.bin"))
            tokens.tofile(os.path.join(peer, "data", "bench", f"{split}.bin"))
        with open(os.path.join(data, "meta.json"), "w") as f:
            json.dump({"vocab_size": c["vocab_size"]}, f)
        with open(os.path.join(data, "tokenizer.json"), "w") as f:
            f.write('{"note": "random tokens for benchmarking"}')
        with open(os.path.join(peer, "data", "bench", "meta.pkl"), "wb") as f:
            pickle.dump({"vocab_size": c["vocab_size"]}, f)  # nanoGPT reads its vocabulary size from here
        ours_ms, peer_ms = [], []
        for i in range(c["rounds"]):
            ours_ms += ours(c, data, os.path.join(tmp, f"out-{i}"))
            peer_ms += nanogpt(c, peer)
    tokens = c["batch_size"] * c["block_size"]
    ours_rate, peer_rate = tokens * 1000 / statistics.median(ours_ms), tokens * 1000 / statistics.median(peer_ms)
    shapes = {k: c[k] for k in SHAPE_KEYS}
    print(f"training throughput, {shapes}, median of {len(ours_ms)} and {len(peer_ms)} steps, "
          f"{c['rounds']} runs each in turns")
    print("| script | step | tokens/s | against nanoGPT |\n|---|---|---|---|")
    print(f"| nanoGPT train.py | {statistics.median(peer_ms):,.0f} ms | {peer_rate:,.0f} | 1.00x |")
    print(f"| our train.py | {statistics.median(ours_ms):,.0f} ms | {ours_rate:,.0f} | {ours_rate / peer_rate:.2f}x |")


if __name__ == "__main__":
    common.run(main)
