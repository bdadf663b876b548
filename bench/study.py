"""
The hyperparameter study: which model this machine should train in a fixed time. Each run trains
for a fixed number of steps, the number its time budget buys, so two runs can share the CPU
without changing their result: the same steps and seed give the same model whatever else runs.

    python bench/study.py time                      # each shape's step time, alone, 2 threads
    python bench/study.py run --minutes=10          # every run of RUNS not yet done, two at a time
    python bench/study.py run --minutes=10 --only="['l4-d256', 'l8-d192']"
    python bench/study.py heldout                   # each domain's held-out text; score the runs on it
    python bench/study.py mix                       # data/<mix> for each weighted mix of MIXES
    python bench/study.py table                     # the finished runs as a Markdown table
    python bench/study.py plot --out=docs/study-10-minutes.png   # their validation curves

`time` trains each shape of SHAPES not yet in results_dir/step_ms.json on data_dir for
warmup_steps + steps steps with the CPU to itself and adds the median step time of the timed
steps to that file. Run it alone: these times turn minutes into step counts. `run` gives each
run of RUNS minutes x 60 / its shape's step time steps (what those minutes buy it alone on this machine),
trains it with train.py for exactly that many steps (the LR decays over them) on one thread,
`parallel` runs at a time, scores it with eval.py on the data's test split, and appends a JSON
line to results_dir/runs.jsonl. A run already there is skipped, so a study that stops part-way
continues where it stopped (stopping `run`, with Ctrl-C or kill, stops its unfinished runs too).

`heldout` decodes the test split of each HELDOUT folder (a domain's text prepared by prepare.py)
back into whole documents, about heldout_chars characters of each, into results_dir/heldout/,
and scores every finished run there that has no scores for them yet. `run` scores each new run on
them too. Bits per byte on the same text compare models whatever their tokenizers: that is how
runs trained on different data (a RUNS entry may set --data_dir) are judged on every domain.
"""

import itertools
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bpe  # noqa: E402
import common  # noqa: E402

data_dir = "data/fawiki"  # prepare.py's output (with a test split) that every run trains on
config = "config/fawiki_small.py"  # the recipe every run starts from, with BASE over it; RUNS change parts of it
results_dir = "bench/results/study"  # step_ms.json, runs.jsonl and one out_dir per run
minutes = 10.0  # run: the time budget each run's step count stands for
parallel = 2  # run: runs at a time, one thread each
only = []  # run: names of RUNS to run (empty = all)
steps = 20  # time: timed steps per shape
warmup_steps = 3  # time: untimed first steps
out = "docs/study-10-minutes.png"  # plot: the figure to write
heldout_chars = 300_000  # heldout: characters of held-out documents kept per domain (whole documents)
mix_tokens = 8_000_000  # mix: training tokens of each mix (its validation split gets a twentieth)
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, str, list))}

# The recipe config/fawiki_small.py had when the study began, pinned here so that the study's runs
# stay comparable when that file takes the study's winner: train.py settings over config's, in fp32
# (which train.py's dtype=auto no longer gives on a CPU with AMX).
BASE = ("--n_layer=4 --n_head=4 --n_embd=256 --block_size=128 --mlp=gelu --dropout=0.1 --batch_size=16 "
        "--gradient_accumulation_steps=2 --learning_rate=2e-3 --min_lr=2e-4 --warmup_iters=50 --dtype=float32")
# Shapes from ~1 M to ~20 M parameters at vocab 8,192, and three of ~5 M from deep and narrow to
# shallow and wide. Each keeps BASE's tokens per step (batch_size x block_size x accumulation)
# unless its name says otherwise.
SHAPES = {
    "l2-d128": "--n_layer=2 --n_head=4 --n_embd=128",
    "l4-d128": "--n_layer=4 --n_head=4 --n_embd=128",
    "l4-d192": "--n_layer=4 --n_head=3 --n_embd=192",
    "l4-d256": "--n_layer=4 --n_head=4 --n_embd=256",
    "l6-d320": "--n_layer=6 --n_head=5 --n_embd=320",
    "l6-d384": "--n_layer=6 --n_head=6 --n_embd=384",
    "l8-d384": "--n_layer=8 --n_head=6 --n_embd=384",
    "l8-d192": "--n_layer=8 --n_head=3 --n_embd=192",
    "l2-d320": "--n_layer=2 --n_head=5 --n_embd=320",
    "l4-d256-ctx256": "--n_layer=4 --n_head=4 --n_embd=256 --block_size=256 --batch_size=8",
    # the best ten-minute size with half and twice BASE's tokens per step
    "l4-d128-accum1": "--n_layer=4 --n_head=4 --n_embd=128 --gradient_accumulation_steps=1",
    "l4-d128-accum4": "--n_layer=4 --n_head=4 --n_embd=128 --gradient_accumulation_steps=4",
    # without dropout: its random masks take a sizeable share of a CPU step at this size
    "l4-d128-dropout0": "--n_layer=4 --n_head=4 --n_embd=128 --dropout=0",
    # dropout on the residual branches only: attention keeps its fast kernel
    "l4-d128-resdrop": "--n_layer=4 --n_head=4 --n_embd=128 --attention_dropout=False",
}
# Tweaks timed as shapes of their own, since a step may cost more (or less) with them: each run buys
# the steps its own step time allows in the same minutes. Each is its shape's arguments plus the
# tweak's, so it is timed and run as exactly that shape with the tweak.
TWEAK_ARGS = {"muon": "--optimizer=muon", "softcap15": "--logit_softcap=15", "ve": "--value_embeddings=True",
              "muon-ve": "--optimizer=muon --value_embeddings=True", "bf16": "--dtype=bfloat16"}
TWEAKS = {f"{shape}-{tweak}": f"{SHAPES[shape]} {TWEAK_ARGS[tweak]}"
          for shape, tweaks in (("l4-d128", ("muon", "softcap15", "ve", "bf16")),
                                ("l4-d192", ("muon", "ve", "muon-ve", "bf16")), ("l4-d256", ("bf16",)))
          for tweak in tweaks}
SHAPES.update(TWEAKS)
# domain -> a prepare.py folder whose test split is that domain's held-out text (--val_fraction=0.05
# --test_fraction=0.05, as data_dir, so a mix prepared with the same fractions holds out the same documents)
HELDOUT = {"fawiki": "data/fawiki", "news": "data/heldout-news", "poems": "data/heldout-poems"}
# data/<name> -> {HELDOUT domain: its share of the training tokens}: weighted mixes on data_dir's tokenizer
# (the HELDOUT folders were prepared with it), written by `mix`.
MIXES = {"mix-wiki50": {"fawiki": 0.5, "news": 0.3, "poems": 0.2},
         "mix-wiki25": {"fawiki": 0.25, "news": 0.45, "poems": 0.3}}
# name -> (shape, train.py overrides beyond the shape). Squared ReLU beat GELU at l4-d256 (the
# first two runs), so the size sweep and the tweaks after it build on squared ReLU.
RUNS = {
    "l4-d256": ("l4-d256", ""),
    "l4-d256-relu2": ("l4-d256", "--mlp=relu2"),
    **{f"{shape}-relu2": (shape, "--mlp=relu2") for shape in SHAPES if shape not in ("l4-d256", *TWEAKS)},
    "l4-d256-seed2": ("l4-d256", "--seed=2"),
    "l4-d256-relu2-seed2": ("l4-d256", "--mlp=relu2 --seed=2"),
    # the best size (l4-d128-relu2) with other learning rates (min_lr stays a tenth) and tweaks
    "l4-d128-relu2-lr1e-3": ("l4-d128", "--mlp=relu2 --learning_rate=1e-3 --min_lr=1e-4"),
    "l4-d128-relu2-lr4e-3": ("l4-d128", "--mlp=relu2 --learning_rate=4e-3 --min_lr=4e-4"),
    # half the batch (which gets there sooner) at the LR scaled with the square root of its size
    "l4-d128-accum1-relu2-lr1.4e-3": ("l4-d128-accum1", "--mlp=relu2 --learning_rate=1.4e-3 --min_lr=1.4e-4"),
    "l4-d128-relu2-muon": ("l4-d128-muon", "--mlp=relu2"),
    "l4-d128-relu2-muon-lr4e-3": ("l4-d128-muon", "--mlp=relu2 --learning_rate=4e-3 --min_lr=4e-4"),
    # a token embedding table of its own for each layer, added to attention's values
    "l4-d128-relu2-ve": ("l4-d128-ve", "--mlp=relu2"),
    # bf16 autocast (what dtype=auto gives on a CPU with AMX) at 4 x 128's step count, then at the steps its
    # shorter step buys, and larger sizes at theirs
    "l4-d128-relu2-bf16": ("l4-d128", "--mlp=relu2 --dtype=bfloat16"),
    "l4-d128-relu2-bf16-timed": ("l4-d128-bf16", "--mlp=relu2"),
    **{f"{shape}-relu2-bf16-timed": (f"{shape}-bf16", "--mlp=relu2") for shape in ("l4-d192", "l4-d256")},
    **{f"{shape}-relu2-bf16-timed-{mix}": (f"{shape}-bf16", f"--mlp=relu2 --data_dir=data/{mix}")
       for shape in ("l4-d128", "l4-d192", "l4-d256") for mix in MIXES},
    # The hour's two sizes in bf16 again: with another seed (how far a seed moves a score at the hour,
    # and whether the sizes still tie), and on config/fawiki_cpu_hour.py's data as its comment prepares
    # it (the quarter mix with a tokenizer learnt from the mix: does it change which size to train?)
    **{f"{shape}-relu2-bf16-timed-{variant}": (f"{shape}-bf16", f"--mlp=relu2 {overrides}")
       for shape in ("l4-d192", "l4-d256")
       for variant, overrides in (("mix-wiki25-seed2", "--data_dir=data/mix-wiki25 --seed=2"),
                                  ("fawiki-mix25", "--data_dir=data/fawiki-mix25"))},
    # logits soft-capped at 15 (15 * tanh(logits / 15)), at 4 x 128's step count, then at the steps its
    # own (longer) step buys in the same minutes
    "l4-d128-relu2-softcap15": ("l4-d128", "--mlp=relu2 --logit_softcap=15"),
    "l4-d128-relu2-softcap15-timed": ("l4-d128-softcap15", "--mlp=relu2"),
    # the tweaks on the mix, whose fawiki text ten minutes do not read often enough to memorise
    **{f"l4-d128-relu2-{tweak}-mix-wiki50": (f"l4-d128-{tweak}", "--mlp=relu2 --data_dir=data/mix-wiki50")
       for tweak in ("ve", "softcap15", "muon")},
    # the two that won there, alone and together, at the hour's shape (4 x 192) and 30 or 60 minutes' steps
    **{f"l4-d192-relu2-{tweak}-mix-wiki50": (f"l4-d192-{tweak}", "--mlp=relu2 --data_dir=data/mix-wiki50")
       for tweak in ("muon", "ve", "muon-ve")},
    # the data: every Persian text there is (fawiki, news, poetry: prepare.py with the fractions of HELDOUT)
    "l4-d256-relu2-all": ("l4-d256", "--mlp=relu2 --data_dir=data/persian-all"),
    "l4-d128-relu2-all": ("l4-d128", "--mlp=relu2 --data_dir=data/persian-all"),
    **{f"{shape}-relu2-{mix}": (shape, f"--mlp=relu2 --data_dir=data/{mix}")
       for shape in ("l4-d128", "l4-d192", "l4-d256") for mix in MIXES},
    # mix-wiki50's shares written by prepare.py --repeat (docs/data.md), whose tokenizer learns from the mix
    **{f"{shape}-relu2-fawiki-mix": (shape, "--mlp=relu2 --data_dir=data/fawiki-mix")
       for shape in ("l4-d128", "l4-d256")},
}


def data_dir_of(c, extra):
    """The data a run trains on: its own --data_dir override, else data_dir."""
    return next((arg.split("=", 1)[1] for arg in extra.split() if arg.startswith("--data_dir=")), c["data_dir"])


def train_args(c, shape, out_dir, extra=""):
    return [os.path.join(ROOT, "train.py"), c["config"], *BASE.split(), *SHAPES[shape].split(), *extra.split(),
            f"--data_dir={data_dir_of(c, extra)}", f"--out_dir={out_dir}", "--max_minutes=0", "--sample_tokens=0"]


def heldout_path(c, domain):
    return os.path.join(c["results_dir"], "heldout", f"{domain}.jsonl")


def heldout_report(out_dir, domain):
    return os.path.join(out_dir, f"eval_heldout_{domain}.json")


def heldout_evals(c, out_dir, domains=HELDOUT):
    """eval.py's arguments for scoring a run on each of these domains' held-out text written so far."""
    return [[os.path.join(ROOT, "eval.py"), f"--out_dir={out_dir}", f"--jsonl={heldout_path(c, domain)}",
             "--rouge_docs=0", f"--report={heldout_report(out_dir, domain)}"]
            for domain in domains if os.path.isfile(heldout_path(c, domain))]


def heldout_scores(out_dir):
    """{domain: bits per byte} of the held-out texts the run has been scored on."""
    scores = {}
    for domain in HELDOUT:
        path = heldout_report(out_dir, domain)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                scores[domain] = json.load(f)["results"]["bits_per_byte"]
    return scores


def read_log(out_dir):
    with open(os.path.join(out_dir, "log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def time_shapes(c):
    path = os.path.join(c["results_dir"], "step_ms.json")
    step_ms = {}
    if os.path.isfile(path):  # shapes timed before keep their times: only new shapes are timed
        with open(path, encoding="utf-8") as f:
            step_ms = json.load(f)
    for shape in set(SHAPES) - set(step_ms):
        out_dir = os.path.join(c["results_dir"], "timing", shape)
        total = c["warmup_steps"] + c["steps"]
        subprocess.run([sys.executable, *train_args(c, shape, out_dir), f"--max_iters={total}", "--log_interval=1",
                        f"--eval_interval={total}", "--eval_iters=1"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        records = read_log(out_dir)
        timed = [r["step_ms"] for r in records if "loss" in r][c["warmup_steps"]:]
        step_ms[shape] = {"step_ms": statistics.median(timed), "params": records[0]["params"]}
        print(f"{shape}: {records[0]['params'] / 1e6:.2f} M parameters, {step_ms[shape]['step_ms']:,.0f} ms/step")
    with common.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(step_ms, f, indent=1)
    print(f"wrote {path}")


def start_run(c, name, step_counts):
    """Start train.py then eval.py for one run, one thread; return (the process, its out_dir, its steps)."""
    shape, extra = RUNS[name]
    steps = step_counts[shape]
    out_dir = os.path.join(c["results_dir"], f"{name}-{c['minutes']:g}m")
    train = train_args(c, shape, out_dir, extra) + [f"--max_iters={steps}", f"--lr_decay_iters={steps}",
                                                   f"--eval_interval={max(1, steps // 10)}"]
    evaluate = [os.path.join(ROOT, "eval.py"), f"--out_dir={out_dir}", f"--data_dir={data_dir_of(c, extra)}"]
    os.makedirs(out_dir, exist_ok=True)
    log = open(os.path.join(out_dir, "study.log"), "w", encoding="utf-8")
    command = " && ".join(shlex.join([sys.executable, *args]) for args in (train, evaluate, *heldout_evals(c, out_dir)))
    # its own process group, the shell and the commands it runs, so that run_study can stop them all
    process = subprocess.Popen(command, shell=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    return process, out_dir, steps


def finished_run(c, name, out_dir, steps):
    """The JSON line of a finished run: its recipe, last validation loss and test-split scores."""
    records = read_log(out_dir)
    with open(os.path.join(out_dir, "eval_test.json"), encoding="utf-8") as f:
        scores = json.load(f)
    last_eval = [r for r in records if "val_loss" in r][-1]
    return {"name": name, "minutes": c["minutes"], "shape": RUNS[name][0], "overrides": RUNS[name][1],
            "steps": steps, "params": records[0]["params"], "tokens": steps * records[0]["tokens_per_step"],
            "val_loss": last_eval["val_loss"], "test": scores, "heldout": heldout_scores(out_dir), "out_dir": out_dir}


def run_study(c):
    path = os.path.join(c["results_dir"], "step_ms.json")
    if not os.path.isfile(path):
        raise common.UsageError(f"{path} not found: run `python bench/study.py time` first, alone")
    with open(path, encoding="utf-8") as f:
        step_counts = {shape: int(c["minutes"] * 60_000 / t["step_ms"]) for shape, t in json.load(f).items()}
    runs_path = os.path.join(c["results_dir"], "runs.jsonl")
    done = set()
    if os.path.isfile(runs_path):
        with open(runs_path, encoding="utf-8") as f:
            done = {(r["name"], r["minutes"]) for r in map(json.loads, f)}
    todo = [name for name in (c["only"] or RUNS) if (name, c["minutes"]) not in done]
    unknown = set(todo) - set(RUNS)
    if unknown:
        raise common.UsageError(f"no such runs: {sorted(unknown)} (RUNS has {sorted(RUNS)})")
    running = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # so that `finally` runs
    try:
        while todo or running:
            while todo and len(running) < c["parallel"]:
                name = todo.pop(0)
                running[name] = start_run(c, name, step_counts)
                print(f"started {name}: {running[name][2]:,} steps", flush=True)
            time.sleep(5)
            for name, (process, out_dir, steps) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                if process.returncode:
                    print(f"{name} failed (exit {process.returncode}): see {out_dir}/study.log", flush=True)
                    continue
                with open(runs_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(finished_run(c, name, out_dir, steps), ensure_ascii=False) + "\n")
                print(f"finished {name}", flush=True)
    finally:  # stopped part-way (Ctrl-C, kill): its unfinished runs stop too, to be rerun from scratch
        for process, _, _ in running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)


def write_heldout(c):
    """Each HELDOUT domain's test documents as a .jsonl of texts, then every finished run's scores on them."""
    for domain, data_dir in HELDOUT.items():
        with open(os.path.join(ROOT, data_dir, "tokenizer.json"), encoding="utf-8") as f:
            tokenizer = bpe.Tokenizer.from_json(f.read())
        tokens = common.load_tokens(os.path.join(ROOT, data_dir, "test.bin")).tolist()
        path, chars = heldout_path(c, domain), 0
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with common.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for is_eot, document in itertools.groupby(tokens, key=lambda token: token == tokenizer.eot_id):
                if not is_eot and chars < c["heldout_chars"]:
                    text = tokenizer.decode(list(document))
                    f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                    chars += len(text)
        print(f"wrote {path}: {chars:,} characters of {domain}")
    runs_path = os.path.join(c["results_dir"], "runs.jsonl")
    if not os.path.isfile(runs_path):  # no run has finished yet: `run` scores each one as it finishes
        return
    with open(runs_path, encoding="utf-8") as f:
        out_dirs = [json.loads(line)["out_dir"] for line in f]
    for out_dir in out_dirs:
        unscored = [domain for domain in HELDOUT if not os.path.isfile(heldout_report(out_dir, domain))]
        for args in heldout_evals(c, out_dir, unscored):
            subprocess.run([sys.executable, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        print(f"{out_dir}: {heldout_scores(out_dir)}", flush=True)
    # read again: a `run` may have added lines meanwhile
    with open(runs_path, encoding="utf-8") as f:
        runs = [{**run, "heldout": heldout_scores(run["out_dir"])} for run in map(json.loads, f)]
    with common.atomic_path(runs_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(run, ensure_ascii=False) + "\n" for run in runs)


def write_mixes(c):
    """data/<name> for each of MIXES: each domain's train (and val) split repeated or cut to its share
    of mix_tokens, one after another (train.py samples windows uniformly, so shares are what it sees),
    with data_dir's test split, tokenizer and meta.json."""
    with open(os.path.join(ROOT, c["data_dir"], "tokenizer.json"), encoding="utf-8") as f:
        tokenizer = f.read()
    for domain, folder in HELDOUT.items():
        with open(os.path.join(ROOT, folder, "tokenizer.json"), encoding="utf-8") as f:
            if f.read() != tokenizer:
                raise common.UsageError(f"{folder} has another tokenizer than {c['data_dir']}: prepare it with "
                                        f"--tokenizer={c['data_dir']}/tokenizer.json")
    with open(os.path.join(ROOT, c["data_dir"], "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    for name, shares in MIXES.items():
        out_dir = os.path.join(ROOT, "data", name)
        os.makedirs(out_dir, exist_ok=True)
        for split, total in (("train", c["mix_tokens"]), ("val", c["mix_tokens"] // 20)):
            parts = [np.resize(common.load_tokens(os.path.join(ROOT, HELDOUT[domain], f"{split}.bin")),
                               int(share * total)) for domain, share in shares.items()]
            with common.atomic_path(os.path.join(out_dir, f"{split}.bin")) as tmp:
                np.concatenate(parts).astype(np.uint16).tofile(tmp)
            meta["splits"][split] = {"tokens": sum(map(len, parts))}
        for file in ("test.bin", "tokenizer.json"):
            shutil.copyfile(os.path.join(ROOT, c["data_dir"], file), os.path.join(out_dir, file))
        with common.atomic_path(os.path.join(out_dir, "meta.json")) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({**meta, "mix": shares}, f, ensure_ascii=False, indent=1)
        print(f"wrote data/{name}: {shares}")


def print_table(c):
    """The finished runs of runs.jsonl, best test bits per byte first, as a Markdown table."""
    with open(os.path.join(c["results_dir"], "runs.jsonl"), encoding="utf-8") as f:
        runs = sorted(map(json.loads, f), key=lambda run: (run["minutes"], run["test"]["results"]["bits_per_byte"]))
    print("| run | minutes | parameters | steps | tokens | passes over train | best val loss | test bits per byte | "
          + " | ".join(f"{domain} held out, bits per byte" for domain in HELDOUT) + " |")
    print("|---" * (8 + len(HELDOUT)) + "|")
    for run in runs:
        with open(os.path.join(ROOT, data_dir_of(c, run["overrides"]), "meta.json"), encoding="utf-8") as f:
            train_tokens = json.load(f)["splits"]["train"]["tokens"]
        scores = heldout_scores(run["out_dir"])
        # the checkpoint kept, which every score here is of, is the run's best evaluation
        best_val_loss = min(r["val_loss"] for r in read_log(run["out_dir"]) if "val_loss" in r)
        heldout = [f"{scores[domain]:.3f}" if domain in scores else "" for domain in HELDOUT]
        print(f"| {run['name']} | {run['minutes']:g} | {run['params'] / 1e6:.2f} M | {run['steps']:,} | "
              f"{run['tokens'] / 1e6:.2f} M | {run['tokens'] / train_tokens:.1f} | {best_val_loss:.3f} | "
              f"{run['test']['results']['bits_per_byte']:.3f} | " + " | ".join(heldout) + " |")


def plot_curves(c):
    """The validation loss of every finished run of `minutes` on data_dir against the minutes of this
    machine its steps stand for (steps x its shape's step time, measured alone)."""
    import matplotlib
    matplotlib.use("Agg")  # draw to a file; no display needed
    import matplotlib.pyplot as plt
    with open(os.path.join(c["results_dir"], "step_ms.json"), encoding="utf-8") as f:
        step_ms = {shape: t["step_ms"] for shape, t in json.load(f).items()}
    with open(os.path.join(c["results_dir"], "runs.jsonl"), encoding="utf-8") as f:
        runs = [run for run in map(json.loads, f)  # validation losses compare on the same data only
                if run["minutes"] == c["minutes"] and data_dir_of(c, run["overrides"]) == c["data_dir"]]
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for i, run in enumerate(sorted(runs, key=lambda run: run["val_loss"])):
        curve = [(r["iter"] * step_ms[run["shape"]] / 60_000, r["val_loss"]) for r in read_log(run["out_dir"])
                 if "val_loss" in r and r["iter"] > 0]
        axes.plot(*zip(*curve), marker=".", linestyle=("-", "--", ":")[i // 10 % 3],  # colours repeat after ten
                  label=f"{run['name']} ({run['params'] / 1e6:.1f} M): {run['val_loss']:.3f}")
    axes.set(xlabel="minutes of this machine (steps x step time alone, 2 threads)", ylabel="validation loss",
             title=f"{c['minutes']:g}-minute runs on {c['data_dir']}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    with common.atomic_path(c["out"]) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    print(f"wrote {c['out']}")


def main():
    c, positional = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    commands = {"time": time_shapes, "run": run_study, "heldout": write_heldout, "mix": write_mixes,
                "table": print_table, "plot": plot_curves}
    if len(positional) != 1 or positional[0] not in commands:
        raise common.UsageError(f"give one of {', '.join(commands)}, then --key=value settings")
    commands[positional[0]](c)


if __name__ == "__main__":
    common.run(main)
