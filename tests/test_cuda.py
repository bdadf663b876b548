"""
The GPU path: the model, its KV cache and eval.py's token NLL in bf16 on a CUDA GPU against
fp32 on the CPU, batches through pinned memory, and training steps in each precision.
Skipped without a GPU; bench/gpu_check.sh runs them with `pytest -m cuda tests/test_cuda.py`.

Tolerances. bf16 keeps 8 significant bits, so every rounding moves a value by up to 2^-9
(0.2%). A logit of this 2-layer model goes through a dozen roundings (the inputs of each
matmul, attention and the MLP) whose errors mostly cancel: ~1% of the logits' spread, a few
hundredths of a nat on a token's NLL, rarely a tenth. The bounds below (0.25 nats on any
token, 0.03 on the mean) leave room for that and catch what a real fault does: a wrong
position, mask or cache entry moves NLLs by whole nats.
"""

import copy
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval as evaluate
import common
import train
from model import GPT, GPTConfig, autocast_for
from test_train import make_data, read_log, run_train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU (torch.cuda.is_available() is False)")]

CUDA = torch.device("cuda")
MAX_TOKEN_DIFF, MAX_MEAN_DIFF = 0.25, 0.03  # nats; see the module docstring
# a repeating random sequence: a model trained on it is confident (large logits), where rounding shows
PATTERN = np.random.default_rng(0).integers(0, 64, size=61)


@pytest.fixture(scope="module")
def trained():
    """A small model trained on the CPU until it predicts the pattern well."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.from_numpy(np.tile(PATTERN, 4))
    for step in range(80):
        starts = torch.randint(0, len(tokens) - 33, (16,))
        rows = torch.stack([tokens[s:s + 33] for s in starts.tolist()])
        _, loss = model(rows[:, :-1], rows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1.0  # confident, not uniform
    return model.eval()


def assert_close_nll(gpu, cpu):
    """gpu, cpu: NLLs (or negative log-probabilities) of the same tokens."""
    gpu, cpu = np.asarray(gpu, dtype=np.float64), np.asarray(cpu, dtype=np.float64)
    assert np.isfinite(gpu).all()
    assert np.abs(gpu - cpu).max() < MAX_TOKEN_DIFF
    assert abs(gpu.mean() - cpu.mean()) < MAX_MEAN_DIFF


def test_forward_in_bf16_matches_cpu_fp32(trained):
    idx = torch.from_numpy(np.stack([np.tile(PATTERN, 2)[:32], np.tile(PATTERN, 2)[20:52]]))
    with torch.no_grad():
        cpu_logits, cpu_loss = trained(idx[:, :-1], idx[:, 1:])
        with autocast_for(CUDA):
            gpu_logits, gpu_loss = copy.deepcopy(trained).to(CUDA)(idx[:, :-1].to(CUDA), idx[:, 1:].to(CUDA))
    if torch.cuda.get_device_capability() >= (8, 0):
        assert gpu_logits.dtype == torch.bfloat16  # autocast did run: this is the bf16 path
    assert_close_nll(-F.log_softmax(gpu_logits.float(), -1).cpu(), -F.log_softmax(cpu_logits, -1))
    assert abs(gpu_loss.item() - cpu_loss.item()) < MAX_MEAN_DIFF


def test_kv_cache_on_cuda_matches_a_full_forward(trained):
    model = copy.deepcopy(trained).to(CUDA)
    idx = torch.from_numpy(np.stack([np.tile(PATTERN, 2)[:24], np.tile(PATTERN, 2)[7:31]])).to(CUDA)
    with torch.no_grad(), autocast_for(CUDA):
        full, _ = model(idx)
        cache = model.new_kv_cache(2)
        pieces = [model(idx[:, :16], kv_cache=cache)[0]]  # the prompt at once, then one token at a time
        pieces += [model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(16, 24)]
    with torch.no_grad():
        cpu_full, _ = trained(idx.cpu())
    cached = torch.cat(pieces, dim=1)
    assert cached.shape == full.shape
    assert_close_nll(-F.log_softmax(cached.float(), -1).cpu(), -F.log_softmax(full.float(), -1).cpu())
    assert_close_nll(-F.log_softmax(cached.float(), -1).cpu(), -F.log_softmax(cpu_full, -1))


@pytest.mark.parametrize("stride", [8, 16])
def test_eval_token_nll_on_cuda_matches_cpu(trained, stride):
    # the pattern (confident predictions) then random tokens (uncertain ones)
    tokens = np.concatenate([np.tile(PATTERN, 3), np.random.default_rng(1).integers(0, 64, size=100)])
    cpu = evaluate.token_nll(trained, tokens, stride=stride, batch_size=4)
    gpu = evaluate.token_nll(copy.deepcopy(trained).to(CUDA), tokens, stride=stride, batch_size=4)
    assert_close_nll(gpu, cpu)


def test_batches_through_pinned_memory_match_the_cpu(tmp_path):
    data = make_data(tmp_path / "data")
    windows = train.TokenWindows(common.load_tokens(os.path.join(data, "train.bin")), block_size=16, seed=3)
    cpu_x, cpu_y = windows.batch(8, 0, 5, 1)
    gpu_x, gpu_y = windows.batch(8, 0, 5, 1, device=CUDA)
    assert gpu_x.device.type == "cuda" and gpu_x.dtype == torch.int64
    assert torch.equal(gpu_x.cpu(), cpu_x) and torch.equal(gpu_y.cpu(), cpu_y)


@pytest.mark.parametrize("dtype", ["auto", "bfloat16", "float16", "float32"])
def test_training_on_cuda_learns_in_every_precision(tmp_path, dtype):
    out = tmp_path / "out"
    run_train(f"--data_dir={make_data(tmp_path / 'data')}", f"--out_dir={out}", "--device=cuda",
              f"--dtype={dtype}", "--compile=False", "--max_iters=30", "--eval_interval=30")
    with open(out / "log.jsonl") as f:
        header = json.loads(f.readline())
    # auto: bf16 where the GPU computes it natively (Ampere on), else fp16 with a GradScaler
    native = "bfloat16" if torch.cuda.get_device_capability() >= (8, 0) else "float16"
    assert header["dtype"] == (native if dtype == "auto" else dtype)
    assert header["device"].startswith("cuda")
    steps, evals = read_log(out)
    assert steps[30] < steps[1] - 0.3
    assert np.isfinite(evals[30]).all()
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert bool(ckpt["scaler"]) == (header["dtype"] == "float16")  # only fp16 keeps a loss scale
