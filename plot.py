"""
Draw the loss curves of one or more training runs from their out_dir/log.jsonl into a PNG.

    python plot.py out-fawiki-small                        # writes out-fawiki-small/loss.png
    python plot.py out-a out-b --out=compare.png --x=minutes   # several runs on one figure

Thin lines are the training loss of single steps; dots joined by lines are the evaluations
(dashed: train split, solid: val split) on the same fixed batches every time.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # draw to a file; no display needed
import matplotlib.pyplot as plt  # noqa: E402

import common  # noqa: E402

out = ""  # PNG to write; "" = loss.png in the first run's directory
x = "iter"  # horizontal axis: "iter" (optimizer steps) or "minutes" (training time, evaluation excluded)

DEFAULTS = {"out": out, "x": x}


def read_log(out_dir):
    """The records of out_dir/log.jsonl that train.py wrote, each a dict with an "iter"."""
    path = os.path.join(out_dir, "log.jsonl")
    if not os.path.isfile(path):
        raise common.UsageError(f"no log at {path} (give the out_dir of a train.py run)")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                records.append(json.loads(line))
            except ValueError as e:
                raise common.UsageError(f"{path} line {number} is not JSON: {e}") from e
            if not isinstance(records[-1], dict) or "iter" not in records[-1]:
                raise common.UsageError(f"{path} line {number} is not a train.py log record")
    if not any("loss" in r or "val_loss" in r for r in records):
        raise common.UsageError(f"{path} holds no training steps or evaluations yet")
    return records


def x_values(records, x_axis):
    return [r["iter"] if x_axis == "iter" else r["train_s"] / 60 for r in records]


def plot(run_dirs, out_path, x_axis):
    logs = [read_log(run_dir) for run_dir in run_dirs]  # every log is checked before drawing starts
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for index, (run_dir, records) in enumerate(zip(run_dirs, logs)):
        color = f"C{index}"
        steps = [r for r in records if "loss" in r]
        evals = [r for r in records if "val_loss" in r]
        name = os.path.basename(os.path.normpath(run_dir))
        axes.plot(x_values(steps, x_axis), [r["loss"] for r in steps], color=color, alpha=0.3, linewidth=0.8)
        axes.plot(x_values(evals, x_axis), [r["train_loss"] for r in evals], "o--", color=color, markersize=3,
                  label=f"{name} train")
        axes.plot(x_values(evals, x_axis), [r["val_loss"] for r in evals], "o-", color=color, markersize=3,
                  label=f"{name} val" + (f" (last {evals[-1]['val_loss']:.3f})" if evals else ""))
    axes.set_xlabel("optimizer step" if x_axis == "iter" else "training minutes")
    axes.set_ylabel("cross-entropy loss (nats per token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with common.atomic_path(out_path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def main(argv=None):
    config, run_dirs = common.configure(DEFAULTS, sys.argv[1:] if argv is None else argv, config_files=False)
    if not run_dirs:
        raise common.UsageError("give one or more run directories, e.g. python plot.py out-fawiki-small")
    common.check_choice("x", config["x"], ("iter", "minutes"))
    out_path = config["out"] or os.path.join(run_dirs[0], "loss.png")
    plot(run_dirs, out_path, config["x"])
    print(f"wrote {out_path}")


if __name__ == "__main__":
    common.run(main)
