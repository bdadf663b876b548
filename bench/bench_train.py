"""
Training benchmarks, both run through the real train.py loop.

Throughput (the default): random tokens at fixed shapes, eager and then torch.compile.
Reports tokens/s, step time, peak memory and MFU = tokens/s x flops_per_token / the matmul
peak, in the precision train.py trains in (bf16 on GPUs and AMX CPUs, else fp32), that train.py
measures in the same run (at start-up, and again if MFU would pass 100%; the table gives the last);
on a GPU of train.DATASHEET_PEAK_FLOPS, also MFU against its datasheet's dense bf16 peak.

    python bench/bench_train.py                     # 6 layers, 6 heads, 384 wide, block 256, batch 16, vocab 16384
    python bench/bench_train.py --n_layer=1 --batch_size=2 --steps=2 --compile_modes="[False]"   # smoke test
    python bench/bench_train.py --device=cuda --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 \
        --batch_size=32 --vocab_size=32768                   # GPT-2 small shapes, config/fawiki_gpu.py's micro-batch

Time to quality (--minutes > 0): train each variant of a config for the same minutes of
training time (evaluation excluded) on real data; the lowest final val loss wins.

    python bench/bench_train.py --minutes=10 --data_dir=data/fawiki \\
        --variants="['', '--pos_emb=learned', '--mlp=relu2', '--qk_norm=True']"
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402

# throughput
device = "cpu"  # "cpu" or "cuda"
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
batch_size = 16
vocab_size = 16384
steps = 10  # timed optimizer steps per mode
warmup_steps = 2  # untimed first steps: memory allocation, and compilation under torch.compile
compile_modes = [False, True]  # eager, then torch.compile
# time to quality
minutes = 0.0  # > 0 switches to time to quality: training minutes per variant
data_dir = "data/fawiki"  # prepare.py output to train and validate on
config = "config/fawiki_small.py"  # the baseline train.py config
variants = ["", "--pos_emb=learned", "--mlp=relu2", "--qk_norm=True", "--tie_weights=False",
            "--lr_schedule=linear"]  # train.py overrides; "" = baseline
results_dir = "bench/results"  # JSON results and the runs' out_dirs

DEFAULTS = {k: v for k, v in globals().items()
            if not k.startswith("_") and isinstance(v, (bool, int, float, str, list))}


def run_train(args):
    """Run train.py with args, its output passing through; return its peak resident memory in MiB."""
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise common.UsageError(f"train.py {' '.join(args)} failed with exit code {process.returncode}")
    return usage.ru_maxrss / 1024  # Linux reports KiB


def read_log(out_dir):
    with open(os.path.join(out_dir, "log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_results(c, name, results):
    path = os.path.join(ROOT, c["results_dir"], name)
    with common.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {path}")


def throughput(c):
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        rng = np.random.default_rng(0)
        for split, size in (("train", 2_000_000), ("val", 100_000)):
            rng.integers(0, c["vocab_size"], size=size).astype(np.uint16).tofile(os.path.join(data, f"{split}.bin"))
        with open(os.path.join(data, "meta.json"), "w") as f:
            json.dump({"vocab_size": c["vocab_size"]}, f)
        with open(os.path.join(data, "tokenizer.json"), "w") as f:
            f.write('{"note": "random tokens for benchmarking"}')
        rows = []
        for compiled in c["compile_modes"]:
            out = os.path.join(tmp, f"out-{compiled}")
            shape = [f"--{k}={c[k]}" for k in ("device", "n_layer", "n_head", "n_embd", "block_size", "batch_size")]
            peak_mib = run_train([*shape, f"--data_dir={data}", f"--out_dir={out}", f"--compile={compiled}",
                                  f"--max_iters={c['warmup_steps'] + c['steps']}", "--log_interval=1",
                                  "--eval_interval=1000000", "--eval_iters=1", "--warmup_iters=0",
                                  "--sample_tokens=0"])  # random tokens: nothing to read
            records = read_log(out)
            header = records[0]
            timed = [r for r in records if "loss" in r][c["warmup_steps"]:]
            gpu = [r["gpu_mem_mb"] for r in timed if "gpu_mem_mb" in r]
            rows.append({"mode": "compile" if compiled else "eager", "device": header["device"],
                         "dtype": header["dtype"], "params": header["params"],
                         "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
                         "step_ms": statistics.median(r["step_ms"] for r in timed),
                         "mfu": statistics.median(r["mfu"] for r in timed),
                         "mfu_datasheet": (statistics.median(r["mfu_datasheet"] for r in timed)
                                           if header.get("datasheet_peak_flops") else None),
                         "peak_flops": timed[-1]["peak_flops"], "flops_per_token": header["flops_per_token"],
                         "peak_mem_mib": max(gpu) if gpu else peak_mib,
                         "memory": "GPU allocated" if gpu else "resident (RSS)"})
    shapes = {k: c[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "vocab_size")}
    print(f"\nthroughput, {shapes}, median of {c['steps']} steps after {c['warmup_steps']} warm-up steps")
    print("| mode | tokens/s | step | MFU | MFU of datasheet peak | peak memory | matmul peak |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        sheet = f"{100 * r['mfu_datasheet']:.1f}%" if r["mfu_datasheet"] is not None else "n/a"
        print(f"| {r['mode']} ({r['device']}, {r['dtype']}) | {r['tokens_per_s']:,.0f} | {r['step_ms']:,.0f} ms "
              f"| {100 * r['mfu']:.1f}% | {sheet} | {r['peak_mem_mib']:,.0f} MiB {r['memory']} "
              f"| {r['peak_flops'] / 1e9:,.0f} GFLOP/s |")
    write_results(c, f"throughput-{c['device']}.json", {"shapes": shapes, "rows": rows})


def time_to_quality(c):
    rows = []
    for index, variant in enumerate(c["variants"]):
        out = os.path.join(ROOT, c["results_dir"], f"ttq-{index}")
        run_train([c["config"], *variant.split(), f"--data_dir={c['data_dir']}", f"--out_dir={out}",
                   f"--max_minutes={c['minutes']}", "--max_iters=100000000"])
        records = read_log(out)
        final = [r for r in records if "val_loss" in r][-1]
        rows.append({"variant": variant or "baseline", "val_loss": final["val_loss"], "iters": final["iter"],
                     "tokens": final["iter"] * records[0]["tokens_per_step"], "train_s": final["train_s"],
                     "out_dir": out})
    print(f"\ntime to quality: {c['config']}, {c['minutes']} training minutes each, data {c['data_dir']}")
    print("| variant | val loss | steps | tokens |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['val_loss']:.4f} | {r['iters']:,} | {r['tokens']:,} |")
    print(f"loss curves: python plot.py {' '.join(r['out_dir'] for r in rows)}")
    write_results(c, "time-to-quality.json", {"config": c["config"], "minutes": c["minutes"], "rows": rows})


def main():
    c, positional = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    if positional:
        raise common.UsageError(f"unexpected argument {positional[0]!r} (use --key=value)")
    if c["minutes"] > 0:
        time_to_quality(c)
    else:
        throughput(c)


if __name__ == "__main__":
    common.run(main)
