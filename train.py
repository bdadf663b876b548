"""
Train a GPT on the token files that prepare.py writes, on a laptop CPU or on many GPUs.

    python train.py config/fawiki_small.py                       # one process
    python train.py config/fawiki_small.py --batch_size=8        # --key=value overrides
    torchrun --standalone --nproc_per_node=8 train.py config/fawiki_gpu.py   # DDP, one node

Everything random about optimizer step k is a pure function of (seed, k): the windows of text,
and the dropout masks, which each process also draws by its rank. So a run resumed from its
checkpoint continues exactly as if it had never stopped, and N processes see the same batches as
one process accumulating N times as many micro-batches.
"""

import contextlib
import ctypes
import json
import math
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, fields
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import bpe
import common
import sample
from common import UsageError, first_line
from model import (GPT, GPTConfig, measure_peak_flops, model_from_checkpoint, native_bf16,
                   read_checkpoint, resolve_device, synchronize, tokenizer_hash)

# I/O
out_dir = "out"  # ckpt.pt and log.jsonl go here
data_dir = "data/fawiki"  # train.bin, val.bin, meta.json and tokenizer.json from prepare.py
init_from = "scratch"  # "scratch", "resume" (out_dir/ckpt.pt) or a checkpoint path to fine-tune
eval_interval = 250  # optimizer steps between evaluations (a checkpoint follows if val improved)
eval_iters = 20  # batches per split in an evaluation; the same batches every time
log_interval = 10  # optimizer steps between training log lines
always_save_checkpoint = False  # save at every evaluation, not only when val loss improves
sample_prompt = "ایران"  # at every evaluation the model continues this text, greedily, into the log
sample_tokens = 32  # new tokens of that sample; 0 = no samples
# experiment tracking, optional: Weights & Biases (pip install wandb), imported only when asked for
wandb_log = False  # send losses, perplexities, LR, tokens/s, MFU and the samples to wandb too
wandb_project = "persian-gpt"
wandb_run_name = ""  # empty = the name of out_dir
# model (a resumed run takes these from its checkpoint)
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256  # context length in tokens
dropout = 0.0  # 0 for pretraining; 0.1 or more when fine-tuning on little data
attention_dropout = True  # dropout on the attention weights too; False keeps a CPU's faster attention kernel
bias = False  # biases in Linear and LayerNorm layers
pos_emb = "rope"  # "rope" (rotary) or "learned" positions
norm = "layernorm"  # "layernorm" or "rmsnorm"
mlp = "gelu"  # MLP activation: "gelu" or "relu2"
qk_norm = False  # RMS-normalise queries and keys in every head
tie_weights = True  # share the token embedding with the output head
logit_softcap = 0.0  # > 0: squash the logits into (-cap, cap) with cap * tanh(logits / cap); 0 = off
value_embeddings = False  # each layer adds a token embedding table of its own to attention's values
# optimization
optimizer = "adamw"  # "adamw", or "muon": Muon for the blocks' weight matrices, AdamW for the rest
batch_size = 16  # sequences per micro-batch in each process
gradient_accumulation_steps = 1  # micro-batches per optimizer step, over all processes together
max_iters = 5000  # optimizer steps
max_minutes = 0.0  # training-time budget in minutes, evaluation excluded (0 = none)
learning_rate = 1e-3  # peak learning rate
min_lr = 1e-4  # learning rate at the end of the decay
lr_schedule = "cosine"  # decay after warmup: "cosine", "linear" or "constant"
warmup_iters = 100  # steps of linear warmup from ~0 to learning_rate
lr_decay_iters = 0  # steps over which the LR decays (0 = max_iters); a time budget also ends it
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip the global gradient norm to this (0 = no clipping)
# system
device = "auto"  # "cpu", "cuda", "cuda:1", ... or "auto" (CUDA when available)
dtype = "auto"  # "float32", "bfloat16" or "float16"; auto = bf16 on CUDA (fp16 if missing) and AMX CPUs, else fp32
compile = None  # torch.compile the model; None = on CUDA only (on a CPU it gains little and slows the first step)
peak_flops = 0.0  # device peak FLOP/s for MFU (0 = measure large matmuls at start)
ddp_timeout_minutes = 5.0  # under torchrun: a collective waiting longer stops the run (a process died)
seed = 1337

DEFAULTS = {k: v for k, v in globals().items()
            if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}


class TokenWindows:
    """Batches of random windows of block_size + 1 consecutive tokens: x holds a window's first
    block_size tokens, y the same tokens shifted by one, the next token to predict at each place.

    batch(batch_size, *key) draws the windows with a generator seeded by (seed, *key), so a
    batch is a pure function of its key: there is no data position to save for resuming."""

    def __init__(self, tokens, block_size, seed=0):
        if len(tokens) <= block_size:
            raise UsageError(f"{len(tokens)} tokens are too few for windows of {block_size + 1}")
        self.tokens, self.block_size, self.seed = tokens, block_size, seed

    def batch(self, batch_size, *key, device="cpu"):
        """(x, y): int64 tensors of shape (batch_size, block_size) on device."""
        rng = np.random.default_rng((self.seed, *key))
        starts = rng.integers(0, len(self.tokens) - self.block_size, size=batch_size)
        # one fancy-indexing read touches only these bytes of the memmap, never the whole file
        rows = self.tokens[starts[:, None] + np.arange(self.block_size + 1)]
        rows = torch.from_numpy(rows.astype(np.int64))  # one contiguous block
        if torch.device(device).type == "cuda":
            # Pinned host memory lets the copy run while the GPU works. Pinning the one contiguous
            # block of rows copies it once; x and y, overlapping views of it, are cut on the GPU.
            rows = rows.pin_memory().to(device, non_blocking=True)
        return rows[:, :-1], rows[:, 1:]


def get_lr(cfg, iter_num, train_seconds):
    """Linear warmup, then decay to min_lr over lr_decay_iters or the time budget, whichever ends first."""
    if iter_num < cfg.warmup_iters:
        return cfg.learning_rate * (iter_num + 1) / (cfg.warmup_iters + 1)
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    step_progress = (iter_num - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    time_progress = train_seconds / (60 * cfg.max_minutes) if cfg.max_minutes > 0 else 0.0
    progress = min(1.0, max(step_progress, time_progress))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.lr_schedule == "cosine" else 1 - progress
    return cfg.min_lr + shape * (cfg.learning_rate - cfg.min_lr)


def check_config(cfg):
    choices = {"dtype": ("auto", "float32", "bfloat16", "float16"), "lr_schedule": ("cosine", "linear", "constant"),
               "compile": (None, True, False)}
    for key, allowed in choices.items():
        common.check_choice(key, getattr(cfg, key), allowed)
    minimums = {"batch_size": 1, "gradient_accumulation_steps": 1, "eval_interval": 1, "eval_iters": 1,
                "log_interval": 1, "sample_tokens": 0, "max_minutes": 0}  # 0: no samples, no time budget
    for key, minimum in minimums.items():
        if getattr(cfg, key) < minimum:
            raise UsageError(f"{key} must be at least {minimum}, got {getattr(cfg, key)}")
    if cfg.ddp_timeout_minutes <= 0:
        raise UsageError(f"ddp_timeout_minutes must be positive, got {cfg.ddp_timeout_minutes}")


def read_data_dir(data_dir):
    """(vocab_size, what every checkpoint carries of the tokenizer: its JSON text and sha256) from
    prepare.py's meta.json and tokenizer.json. (Its train.bin and val.bin are checked as they load.)"""
    if not os.path.isdir(data_dir):
        raise UsageError(f"data directory not found: {data_dir} (run prepare.py, or set --data_dir)")
    try:
        with open(os.path.join(data_dir, "meta.json"), encoding="utf-8") as f:
            vocab_size = int(json.load(f)["vocab_size"])
        with open(os.path.join(data_dir, "tokenizer.json"), encoding="utf-8") as f:
            tokenizer_text = f.read()
    except FileNotFoundError as e:
        raise UsageError(f"{e.filename} not found (run prepare.py to write it)") from e
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"cannot read {data_dir}/meta.json or tokenizer.json: {e}") from e
    return vocab_size, {"tokenizer": tokenizer_text, "tokenizer_sha256": tokenizer_hash(tokenizer_text)}


def keep_freed_memory():
    """With glibc (Linux), reuse freed memory instead of handing big blocks back to the OS.

    Every CPU step allocates and frees the logits and their gradient (batch x context x vocab
    floats, large at a big vocabulary). By default glibc maps each such block fresh from the OS,
    and every page of it faults on first touch, step after step. Kept on the heap, the blocks
    are reused: faster steps, for a somewhat higher peak of memory.
    """
    with contextlib.suppress(OSError, AttributeError):  # no glibc (macOS, Windows, musl): leave the allocator alone
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX = 0: big blocks come from the heap, not fresh mappings
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap for reuse


def cpu_has_amx():
    """Whether this CPU multiplies bf16 matrices in AMX tiles (Intel Xeon from Sapphire Rapids on), as
    Linux's /proc/cpuinfo lists. There bf16 autocast shortens a training step; on other CPUs it has not
    been measured to, and where bf16 is emulated it is slow, so they train in fp32."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        return any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
    return False


# Datasheet peaks of dense 16-bit (bf16 = fp16) tensor-core matmuls with fp32 accumulation,
# without 2:4 sparsity (NVIDIA's headline figures are twice these), by the name CUDA reports
# after "NVIDIA ". MFU against them compares with other projects' figures; the measured peak
# that train.py divides by is what this GPU reaches at its clocks and power limit.
DATASHEET_PEAK_FLOPS = {"A100": 312e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12,
                        "H200 NVL": 835e12, "H200": 989e12, "GH200": 989e12, "L4": 121e12,
                        "GeForce RTX 4090": 165e12, "GeForce RTX 4090 D": None}  # None: cut down, unknown


def datasheet_peak_flops(device_name):
    """The table's peak for a GPU name such as "NVIDIA A100-SXM4-80GB" or "NVIDIA H100 80GB HBM3"
    (the longest name it starts with, as a whole word), or None for a GPU not in the table."""
    name = device_name.removeprefix("NVIDIA ")
    known = [key for key in DATASHEET_PEAK_FLOPS if name == key or name.startswith((key + " ", key + "-"))]
    return DATASHEET_PEAK_FLOPS[max(known, key=len)] if known else None


@contextlib.contextmanager
def fail_together(run):
    """Run the block in every process; if it fails in any of them, raise in all of them.

    Processes sometimes do different work: each reads its own disk at start-up (a node may lack
    the data or the checkpoint), and only rank 0 logs, evaluates and saves. A process failing
    there alone would leave the others blocked in their next collective (DDP's gradient
    all-reduce) until the process group's timeout, minutes later. So after such a block every
    process tells the others whether it failed, in one small all-reduce (gloo and nccl alike),
    and if one did, all gather the messages and stop at once: the failed one with its own error,
    the others naming it and its message.

    Failures inside a training step, where every process runs the same collectives, cannot be
    announced this way. The failed process exits at once (no barrier on the way out), torchrun
    stops the other processes of its node, and those on other nodes stop when their collective
    times out (ddp_timeout_minutes; with nccl, the watchdog then ends the process)."""
    error = report = None
    try:
        yield
    except Exception as e:  # a full disk, CUDA out of memory, a file missing on this node ...
        if not run.ddp:
            raise
        # which process failed (torchrun sets GROUP_RANK and LOCAL_RANK), and why, in one line
        reason = first_line(e, name=not isinstance(e, UsageError))
        where = f"node {os.environ.get('GROUP_RANK', '0')}, local rank {os.environ.get('LOCAL_RANK', '0')}"
        error, report = e, f"rank {run.rank} on {socket.gethostname()} ({where}): {reason}"
    if run.ddp:
        # one small all-reduce says whether any process failed; only then are the messages gathered
        any_failed = torch.tensor([int(error is not None)], device=run.device)  # nccl needs the GPU
        dist.all_reduce(any_failed)
        if any_failed.item():
            reports = [None] * run.world_size
            dist.all_gather_object(reports, report)
            if error is None:
                raise UsageError(f"stopping because {next(filter(None, reports))}")
            if isinstance(error, UsageError):
                raise UsageError(report) from error
            raise error


def setup(cfg):
    """Which process of how many this is, on which device, in which precision. Under torchrun
    (which sets RANK, LOCAL_RANK and WORLD_SIZE) the processes join one group: nccl on GPUs,
    gloo on CPUs."""
    ddp = "RANK" in os.environ
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if cfg.gradient_accumulation_steps % world_size:
        raise UsageError(f"gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be "
                         f"divisible by the number of processes ({world_size})")
    device = resolve_device(cfg.device, int(os.environ["LOCAL_RANK"]) if ddp else None)
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
    # auto: bf16 where the device computes it natively (GPUs of model.native_bf16, CPUs with AMX);
    # older CUDA GPUs get fp16 and a GradScaler, every other device fp32
    if cfg.dtype != "auto":
        dtype = getattr(torch, cfg.dtype)
    elif device.type == "cuda":
        dtype = torch.bfloat16 if native_bf16(device) else torch.float16
    elif device.type == "cpu" and cpu_has_amx():
        dtype = torch.bfloat16
    else:  # other CPUs, and Apple GPUs (mps), where it has not been measured
        dtype = torch.float32
    if ddp:  # the timeout bounds how long a process waits for one that died (see fail_together)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(minutes=cfg.ddp_timeout_minutes),
                                device_id=device if device.type == "cuda" else None)
    return SimpleNamespace(
        ddp=ddp, rank=rank, world_size=world_size, master=rank == 0, device=device, dtype=dtype,
        autocast=torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext(),
        accum=cfg.gradient_accumulation_steps // world_size,  # micro-batches per step in this process
        compile=device.type == "cuda" if cfg.compile is None else cfg.compile)


def init_model(cfg, run, vocab_size, from_prepare, ckpt_path):
    """The model on its device, its optimizers and loss scaler, and where training stands
    (iter_num, best_val_loss, train_seconds). init_from="scratch" builds a new model from the
    model keys above (GPTConfig's fields); "resume" continues ckpt_path where it stopped; a
    checkpoint path fine-tunes that run's weights on a fresh schedule, with a new dropout and
    perhaps a shorter context."""
    torch.manual_seed(cfg.seed)
    if cfg.init_from == "scratch":
        model_args = {key.name: getattr(cfg, key.name) for key in fields(GPTConfig) if key.name != "vocab_size"}
        model = GPT(GPTConfig(vocab_size=vocab_size, **model_args))
    else:
        source = ckpt_path if cfg.init_from == "resume" else cfg.init_from
        ckpt = read_checkpoint(source, run.device)
        if ckpt["tokenizer_sha256"] != from_prepare["tokenizer_sha256"]:
            raise UsageError(f"{source} was trained with another tokenizer than {cfg.data_dir}/tokenizer.json")
        overrides = {} if cfg.init_from == "resume" else {"dropout": cfg.dropout}
        model = model_from_checkpoint(ckpt, source, **overrides)
        if cfg.init_from != "resume" and cfg.block_size < model.config.block_size:
            if run.master:  # block_size has a default, so a fine-tune may crop without being asked to
                print(f"note: cropping the context from {model.config.block_size} to block_size {cfg.block_size} "
                      f"tokens (set --block_size to keep more)", file=sys.stderr, flush=True)
            model.crop_block_size(cfg.block_size)
    model.to(run.device)
    optimizers = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                            run.device.type, cfg.optimizer)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.dtype == torch.float16)  # fp16 needs loss scaling
    if cfg.init_from != "resume":
        return model, optimizers, scaler, (0, math.inf, 0.0)
    if len(ckpt["optimizers"]) != len(optimizers):
        raise UsageError(f"{source} was trained with another optimizer (set --optimizer as it was)")
    for optimizer, state in zip(optimizers, ckpt["optimizers"]):
        optimizer.load_state_dict(state)
    # A GradScaler is on only under fp16 and saves an empty state otherwise: a run saved under
    # bf16 or fp32 and resumed under fp16 (or the reverse) has no loss scale to carry over.
    if bool(ckpt["scaler"]) == scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    elif run.master:
        change = ("without loss scaling; this run is float16, so the loss scale starts afresh" if scaler.is_enabled()
                  else "in float16 with loss scaling; this run needs none, so the loss scale is dropped")
        print(f"note: {source} was trained {change}", file=sys.stderr, flush=True)
    return model, optimizers, scaler, (ckpt["iter_num"], ckpt["best_val_loss"], ckpt["train_seconds"])


def wrap_model(model, run):
    """(the model to evaluate: compiled if asked for, the model a training step runs: that in DDP
    under torchrun). Compile, then wrap, as PyTorch's guide to where to apply torch.compile does:
    DDP's forward runs the compiled module with DDP marked active, so TorchDynamo's DDPOptimizer
    cuts the graph at DDP's gradient buckets and each bucket's all-reduce overlaps the rest of the
    backward pass."""
    fast_model = torch.compile(model) if run.compile else model
    if not run.ddp:
        return fast_model, fast_model
    train_model = DDP(fast_model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    return fast_model, train_model


@torch.no_grad()
def evaluate(cfg, fast_model, model, splits, run, tokenizer):
    """{"train_loss": ..., "val_loss": ...}: each split's mean loss over the same eval_iters
    batches every time. With sample_tokens, also "sample": the model's greedy continuation of
    sample_prompt as sample.generate_text writes it (the prompt normalised as the data was, read
    as a document start). Greedy, so it depends on the weights alone: from one evaluation to the
    next, the text changes only as much as training changed the model."""
    fast_model.eval()
    record = {}
    with run.autocast:
        for name, data in splits.items():
            batches = (data.batch(cfg.batch_size, 1, k, device=run.device) for k in range(cfg.eval_iters))
            record[f"{name}_loss"] = sum(fast_model(x, y)[1].item() for x, y in batches) / cfg.eval_iters
        if cfg.sample_tokens:  # the model itself, not the compiled one: generation's shapes change every token
            record["sample"] = sample.generate_text(cfg.sample_prompt, cfg.sample_tokens, temperature=0,
                                                    model=model, tokenizer=tokenizer)
    fast_model.train()
    return record


class TrainingLog:
    """What rank 0 reports, and where: the console, out_dir/log.jsonl (a JSON record a line) and,
    with wandb_log, a Weights & Biases run. The first record describes the run (what trains,
    where, how fast it could); step records and evaluations follow. A fresh run starts log.jsonl
    empty; a resumed one keeps the records up to its checkpoint's step and drops the rest, so the
    log reads as one uninterrupted run.

    A step record gives tokens/s, step time and MFU since the previous one, by the training clock
    (rank 0's). MFU divides the model's FLOP/s in one process by the device's peak: peak_flops if
    set, else the best rate of large matmuls measured at start-up. Measured while other work
    shares the device, that peak comes out low, and MFU would pass 100%. So whenever the model
    runs faster than the peak allows, the peak is measured again and raised to the best of all
    measurements and of the model's own rate, which the device has evidently reached: MFU never
    passes 100%. On a GPU of DATASHEET_PEAK_FLOPS, MFU against the datasheet's peak comes too."""

    def __init__(self, cfg, config, model, run, iter_num, train_seconds):
        self.model, self.run, self.last_step = model, run, (iter_num, train_seconds)
        self.tokens_per_step = cfg.gradient_accumulation_steps * cfg.batch_size * model.config.block_size
        self.peak = cfg.peak_flops or measure_peak_flops(run.device, run.dtype)
        self.datasheet_peak = (datasheet_peak_flops(torch.cuda.get_device_name(run.device))
                               if run.device.type == "cuda" and run.dtype != torch.float32 else None)
        self.path = os.path.join(cfg.out_dir, "log.jsonl")
        kept = []
        if cfg.init_from == "resume" and os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    with contextlib.suppress(ValueError, KeyError, TypeError):  # a line cut off by a crash
                        if json.loads(line)["iter"] <= iter_num:
                            kept.append(line)
        with common.atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        self.start_time = time.time()
        self.tracker = None
        if cfg.wandb_log:  # wandb is imported only here: nothing else needs it
            try:
                import wandb
            except ImportError as e:
                raise UsageError("wandb_log=True needs wandb: pip install wandb") from e
            name = cfg.wandb_run_name or os.path.basename(os.path.abspath(cfg.out_dir))
            self.tracker = wandb.init(project=cfg.wandb_project, name=name, config=config)
        dtype = str(run.dtype).removeprefix("torch.")
        sheet = f", datasheet {self.datasheet_peak / 1e12:,.0f} TFLOP/s" if self.datasheet_peak else ""
        self.write({"iter": iter_num, "params": model.num_params(), "flops_per_token": model.flops_per_token(),
                    "peak_flops": self.peak, "datasheet_peak_flops": self.datasheet_peak,
                    "tokens_per_step": self.tokens_per_step, "processes": run.world_size,
                    "device": str(run.device), "dtype": dtype, "compile": run.compile},
                   f"{model.num_params() / 1e6:.2f}M parameters, {self.tokens_per_step:,} tokens per step, "
                   f"{run.world_size} process(es) on {run.device}, {dtype}, compile={run.compile}, "
                   f"peak {self.peak / 1e9:,.0f} GFLOP/s{sheet}")

    def step(self, iter_num, loss, lr, grad_norm, train_seconds):
        """Log a training step, with the speed and memory figures of the steps since the last one."""
        steps, seconds = iter_num - self.last_step[0], train_seconds - self.last_step[1]
        self.last_step = iter_num, train_seconds
        tokens_per_s = steps * self.tokens_per_step / seconds
        flops = tokens_per_s / self.run.world_size * self.model.flops_per_token()  # in one process
        if flops > self.peak:
            self.peak = max(self.peak, measure_peak_flops(self.run.device, self.run.dtype), flops)
        record = {"iter": iter_num, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s,
                  "step_ms": 1000 * seconds / steps, "mfu": flops / self.peak,
                  "mfu_datasheet": self.datasheet_peak and flops / self.datasheet_peak, "peak_flops": self.peak,
                  "train_s": train_seconds}
        if self.run.device.type == "cuda":
            record["gpu_mem_mb"] = torch.cuda.max_memory_allocated(self.run.device) / 2**20
        sheet = f" ({100 * record['mfu_datasheet']:.1f}% of the datasheet peak)" if self.datasheet_peak else ""
        self.write(record, f"iter {iter_num}: loss {loss:.4f}, lr {lr:.2e}, {tokens_per_s:,.0f} tokens/s, "
                           f"{record['step_ms']:.0f} ms/step, mfu {100 * record['mfu']:.1f}%{sheet}")

    def write(self, record, text):
        """Print text; record, with the seconds since the log opened, to log.jsonl and the tracker."""
        record = {**record, "elapsed_s": time.time() - self.start_time}
        print(text, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self.tracker is not None:  # the record's numbers and sample, and the perplexity of each loss
            values = {key: value for key, value in record.items()
                      if key != "iter" and (key == "sample" or type(value) in (int, float))}
            values.update({key.replace("loss", "perplexity"): math.exp(min(record[key], 700))  # no overflow
                           for key in ("loss", "train_loss", "val_loss") if key in record})
            self.tracker.log(values, step=record["iter"])

    def close(self):
        if self.tracker is not None:
            self.tracker.finish()


@contextlib.contextmanager
def stop_requests():
    """Within the block, SIGINT and SIGTERM ask the loop to stop: it finishes its step, saves and
    exits cleanly. A second signal acts at once. Yields the list of the signals received."""
    received = []

    def request_stop(signum, frame):
        received.append(signum)
        signal.signal(signum, previous[signum])
        print(f"{signal.Signals(signum).name}: saving after this step (send it again to quit now)",
              file=sys.stderr, flush=True)

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def share_step(run, loss, stop, seconds):
    """One small exchange per step: (the loss averaged over processes, whether any process was
    asked to stop, rank 0's step time). The LR schedule and the time budget must agree across
    processes, so all of them go by rank 0's clock."""
    stats = torch.stack([loss, torch.tensor(float(bool(stop)), device=run.device),
                         torch.tensor(seconds if run.master else 0.0, device=run.device)])
    if run.ddp:
        dist.all_reduce(stats)
        stats[0] /= run.world_size
    return stats.tolist()


def optimizer_step(model, optimizers, scaler, lr, grad_clip):
    """Update every parameter at learning rate lr after clipping the gradients' global norm to
    grad_clip (0: no clipping), and zero the gradients. Under fp16 the scaler unscales the
    gradients first and skips a step whose gradients overflowed. Returns the norm before
    clipping, as a tensor: reading it waits for the device, so only a log line does."""
    for optimizer in optimizers:
        scaler.unscale_(optimizer)
        for group in optimizer.param_groups:
            group["lr"] = lr
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    for optimizer in optimizers:
        scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
    scaler.update()
    return grad_norm


def train(config):
    cfg = SimpleNamespace(**config)
    check_config(cfg)
    run = setup(cfg)
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.pt")
    # Every process reads the data and the checkpoint from its own node's disk, so every process
    # checks that they are there; rank 0 alone reads the tokenizer and opens the log (measuring the peak).
    with fail_together(run):
        vocab_size, from_prepare = read_data_dir(cfg.data_dir)
        model, optimizers, scaler, (iter_num, best_val_loss, train_seconds) = init_model(
            cfg, run, vocab_size, from_prepare, ckpt_path)
        train_data, val_data = (TokenWindows(common.load_tokens(os.path.join(cfg.data_dir, f"{split}.bin")),
                                             model.config.block_size, cfg.seed) for split in ("train", "val"))
        tokenizer = bpe.Tokenizer.from_json(from_prepare["tokenizer"]) if run.master and cfg.sample_tokens else None
        log = TrainingLog(cfg, config, model, run, iter_num, train_seconds) if run.master else None

    def fetch(step, micro):  # this process's micro-batch `micro` of optimizer step `step`
        return train_data.batch(cfg.batch_size, 0, step, run.rank * run.accum + micro, device=run.device)

    def save(message):  # rank 0 only; atomically, so a failure never leaves half a checkpoint
        ckpt = {"model_args": asdict(model.config), "model": model.state_dict(),
                "optimizers": [optimizer.state_dict() for optimizer in optimizers], "scaler": scaler.state_dict(),
                "iter_num": iter_num, "best_val_loss": best_val_loss, "train_seconds": train_seconds,
                "config": config, **from_prepare}
        with common.atomic_path(ckpt_path) as tmp:
            torch.save(ckpt, tmp)
        print(message, flush=True)

    def stopped():  # what a save asked for by a signal says
        return f"stopped at step {iter_num}; saved {ckpt_path} (continue with --init_from=resume)"

    def evaluate_and_save(stopping=False):  # rank 0 only; stopping saves whatever the loss
        nonlocal best_val_loss
        record = evaluate(cfg, fast_model, model, {"train": train_data, "val": val_data}, run, tokenizer)
        text = f"step {iter_num}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}"
        text += f"\n  sample: {cfg.sample_prompt}{record['sample']}" if cfg.sample_tokens else ""
        log.write({"iter": iter_num, **record, "lr": get_lr(cfg, iter_num, train_seconds), "train_s": train_seconds},
                  text)
        if stopping or iter_num > 0 and (record["val_loss"] < best_val_loss or cfg.always_save_checkpoint):
            best_val_loss = min(best_val_loss, record["val_loss"])
            save(stopped() if stopping else f"saved {ckpt_path}")

    budget = 60 * cfg.max_minutes or math.inf  # seconds of training, evaluation excluded
    try:
        fast_model, train_model = wrap_model(model, run)
        with stop_requests() as stop_requested:
            with fail_together(run):
                if run.master and iter_num == 0:
                    evaluate_and_save()
            x, y = fetch(iter_num, 0)
            t_last = time.perf_counter()
            while iter_num < cfg.max_iters and train_seconds < budget:
                lr = get_lr(cfg, iter_num, train_seconds)
                # dropout masks depend only on (seed, step, rank), like the batches
                torch.manual_seed(int(np.random.SeedSequence((cfg.seed, iter_num, run.rank)).generate_state(1)[0]))
                loss_sum = torch.zeros((), device=run.device)
                for micro in range(run.accum):
                    if run.ddp:  # average gradients across processes only once, after the last micro-batch
                        train_model.require_backward_grad_sync = micro == run.accum - 1
                    with run.autocast:
                        _, loss = train_model(x, y)
                    x, y = fetch(iter_num, micro + 1) if micro + 1 < run.accum else fetch(iter_num + 1, 0)
                    scaler.scale(loss / run.accum).backward()
                    loss_sum += loss.detach()
                synchronize(run.device)  # a step is timed from the last reading to this one, the update before it
                now = time.perf_counter()
                lossf, stop, step_seconds = share_step(run, loss_sum / run.accum, stop_requested, now - t_last)
                if not math.isfinite(lossf):
                    kept = f"; the last good checkpoint is {ckpt_path}" if os.path.isfile(ckpt_path) else ""
                    raise UsageError(f"loss is {lossf} at step {iter_num}: training diverged, stopping "
                                     f"(try a lower learning_rate){kept}")
                grad_norm = optimizer_step(model, optimizers, scaler, lr, cfg.grad_clip)
                iter_num += 1
                train_seconds += step_seconds
                t_last = now

                finished = iter_num >= cfg.max_iters or train_seconds >= budget
                log_now = iter_num % cfg.log_interval == 0 or finished
                eval_now = iter_num % cfg.eval_interval == 0 or finished
                if not (log_now or eval_now or stop):
                    continue
                synchronize(run.device)  # the update just queued is training time
                paused = time.perf_counter()  # logging, evaluating and measuring the peak are not
                with fail_together(run):  # rank 0 logs, evaluates and saves; the others wait to hear
                    if run.master and log_now:
                        log.step(iter_num, lossf, lr, grad_norm.item(), train_seconds)
                    if run.master and eval_now:  # before a requested stop too: a resumed run would not redo it
                        evaluate_and_save(stopping=bool(stop))
                    elif run.master and stop:
                        save(stopped())
                if stop:
                    break
                t_last += time.perf_counter() - paused
    finally:
        if log:
            log.close()
        train_model = None  # free DDP's reducer while its process group exists: in the other order gloo can hang
    if run.ddp:  # not after a failure: the processes may be out of step, and the exit closes the group
        dist.destroy_process_group()


def main():
    train(common.parse_config(DEFAULTS))


if __name__ == "__main__":
    common.run(main)
