"""
A GPT language model in one file: token embedding, positions (rotary or learned),
pre-norm transformer blocks of causal self-attention and an MLP, a final norm, and an
output head that shares its weights with the token embedding.

    model = GPT(GPTConfig(vocab_size=8192))
    logits, loss = model(idx, targets)          # idx, targets: (B, T) int64

For generation, a KV cache keeps the keys and values of the tokens already seen, so
each new token costs one position of work instead of a whole forward pass:

    cache = model.new_kv_cache(batch_size=1)
    logits, _ = model(prompt, kv_cache=cache)   # fills the cache
    logits, _ = model(next_token, kv_cache=cache)
"""

import contextlib
import functools
import hashlib
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import bpe
from common import UsageError, check_choice, first_line


@dataclass
class GPTConfig:
    block_size: int = 256  # longest context the model attends over
    vocab_size: int = 8192
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    attention_dropout: bool = True  # with dropout > 0, also drop attention weights (not only residual branches)
    bias: bool = False  # biases in Linear and LayerNorm; without them training is a bit faster
    pos_emb: str = "rope"  # "rope" (rotary, relative) or "learned" (absolute embedding table)
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    mlp: str = "gelu"  # MLP activation: "gelu" or "relu2" (squared ReLU)
    qk_norm: bool = False  # RMS-normalise queries and keys per head (bounds attention logits)
    tie_weights: bool = True  # the output head shares the token embedding's matrix
    logit_softcap: float = 0.0  # > 0: logits squashed smoothly into (-cap, cap) by cap * tanh(logits / cap)
    value_embeddings: bool = False  # each layer adds a token embedding table of its own to attention's values

    def __post_init__(self):
        choices = {"pos_emb": ("rope", "learned"), "norm": ("layernorm", "rmsnorm"), "mlp": ("gelu", "relu2")}
        for key, allowed in choices.items():
            check_choice(key, getattr(self, key), allowed)
        if self.n_embd % self.n_head:
            raise UsageError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2:
            raise UsageError("rotary positions need an even head size (n_embd / n_head)")


def make_norm(config):
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


def apply_rotary(x, cos, sin):
    """Rotate pairs of channels (i, i + D/2) of x (B, H, T, D) by position-dependent angles."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # x's: bf16 under autocast, where the angles are fp32
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, one row per sequence.

    Every row keeps its own length, so sequences of different lengths, started at different
    times, decode together: a forward pass continues a run of rows (cache_row onwards) and puts
    each row's new tokens at that row's own positions. (One cache per sequence would cost one
    forward per sequence, and left-padding the rows to a common length would shift their
    positions.) Attention reads every row up to the longest row's end and masks out each key
    past the query's own position: the future, what a shorter row has not written yet, and
    whatever an earlier, longer sequence left in the row. Steps differ only in sizes, so a
    compiled model (int8, see quantize_weights), whose sizes are symbolic, reuses its graphs from
    step to step.

    Buffers are allocated at the first forward, in the dtype the attention computes in (bf16
    under autocast). `lengths[r]` is how many tokens row r holds, which is also the position of
    its next one.
    """

    def __init__(self, config, batch_size, dtype):
        self.config, self.batch_size, self.dtype = config, batch_size, dtype
        self.k = self.v = None  # one (batch_size, n_head, block_size, head_size) buffer per layer
        self.lengths = [0] * batch_size

    def begin(self, idx, cache_row=0):
        """Set up a forward of idx (B, T) whose rows continue cache rows cache_row, cache_row + 1, ...
        and return the positions of its tokens (B, T). The rows hold the new tokens from here on.

        A full row is not slid: in a model of two or more layers the cached keys were computed
        with the dropped tokens in view, so the caller starts a fresh window instead."""
        B, T = idx.shape
        c = self.config
        if cache_row < 0 or cache_row + B > self.batch_size:
            raise ValueError(f"rows {cache_row}..{cache_row + B - 1} are outside a KV cache of {self.batch_size} rows")
        past = self.lengths[cache_row:cache_row + B]
        end = max(past) + T  # keys the attention reads: up to the longest row's new end
        if end > c.block_size:
            raise ValueError(f"KV cache is full ({max(past)} + {T} tokens > block_size "
                             f"{c.block_size}): rebuild it from the last tokens")
        self.lengths[cache_row:cache_row + B] = [length + T for length in past]
        if self.k is None:
            device = idx.device.type
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.dtype
            shape = (self.batch_size, c.n_head, c.block_size, c.n_embd // c.n_head)
            self.k, self.v = ([torch.zeros(shape, dtype=dtype, device=idx.device) for _ in range(c.n_layer)]
                              for _ in "kv")
        # Views of what this forward reads, taken here: a compiled model sees tensors of new sizes,
        # not a cache_row and an end that it would compile a new graph for each value of.
        self.rows_k, self.rows_v = ([buffer[cache_row:cache_row + B, :, :end] for buffer in buffers]
                                    for buffers in (self.k, self.v))
        self.row_index = torch.arange(B, device=idx.device)[:, None]
        self.positions = torch.tensor(past, device=idx.device)[:, None] + torch.arange(T, device=idx.device)
        # (B, 1, T, end), every head alike
        self.attn_mask = (torch.arange(end, device=idx.device) <= self.positions[:, :, None])[:, None]
        return self.positions

    def update(self, layer, k, v):
        """Store this layer's new keys/values (B, H, T, D) at their rows' positions; return the
        rows' keys and values up to the longest row's end (B, H, end, D), to be masked by attn_mask."""
        keys, values = self.rows_k[layer], self.rows_v[layer]
        keys[self.row_index, :, self.positions] = k.transpose(1, 2)
        values[self.row_index, :, self.positions] = v.transpose(1, 2)
        return keys, values

    def reset(self, row):
        """Empty one row (its old entries stay in the buffers, masked, until overwritten)."""
        self.lengths[row] = 0

    def copy_rows(self, sources, targets):
        """Row targets[i] becomes a copy of row sources[i]: to keep the active rows one run, or to
        give each beam its parent's entries (a row may be copied to several). Only the positions
        the rows hold are copied: nothing past a row's length is ever read unmasked."""
        lengths = [self.lengths[row] for row in sources]
        for row, length in zip(targets, lengths):
            self.lengths[row] = length
        if self.k is not None:
            sources, targets = (torch.tensor(rows, device=self.k[0].device) for rows in (sources, targets))
            for buffer in self.k + self.v:
                buffer[targets, :, :max(lengths)] = buffer[sources, :, :max(lengths)]


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.n_head = config.n_head
        self.layer = layer  # index into the KV cache
        self.dropout = config.dropout if config.attention_dropout else 0.0
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        head_size = config.n_embd // config.n_head
        self.q_norm = nn.RMSNorm(head_size) if config.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_size) if config.qk_norm else nn.Identity()
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rotary, kv_cache, value_embedding=None):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in self.qkv(x).split(C, dim=2))
        if value_embedding is not None:  # (B, T, C): the token's own vector, whatever its context
            v = v + value_embedding.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if kv_cache is None else kv_cache.attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0, is_causal=kv_cache is None)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.activation = config.mlp
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.fc(x)
        x = F.relu(x).square() if self.activation == "relu2" else F.gelu(x)
        return self.dropout(self.proj(x))


class Block(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.norm2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rotary, kv_cache, value_embedding=None):
        x = x + self.attn(self.norm1(x), rotary, kv_cache, value_embedding)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_emb == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        # outside the blocks: tables, not weight matrices, so never given to Muon (configure_optimizers)
        self.value_embeddings = nn.ModuleList(nn.Embedding(config.vocab_size, config.n_embd)
                                              for _ in range(config.n_layer if config.value_embeddings else 0))
        self.norm_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight  # one matrix maps tokens in and out

        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        # Each block adds its output projections to the residual stream; scaling them keeps
        # the stream's variance from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @property
    def inv_freq(self):
        """The rotary frequencies, in fp32 whatever the weights' dtype: rounded to bf16 (0.4%),
        they would turn late positions' angles by far more than the rounding of the weights."""
        head_size = self.config.n_embd // self.config.n_head
        return 1.0 / 10000 ** (torch.arange(0, head_size, 2, device=self.wte.weight.device).float() / head_size)

    def forward(self, idx, targets=None, kv_cache=None, cache_row=0, head=True):
        """Logits (B, T, vocab_size) and the loss if targets are given. With kv_cache, the rows
        of idx continue the cache's rows cache_row, cache_row + 1, ... each from its own length.
        head=False skips the output head and returns (None, None): reading a prompt into the
        cache needs no logits, and the head over every prompt position is a sizeable part of its cost."""
        B, T = idx.shape
        if kv_cache is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
            positions = torch.arange(T, device=idx.device)[None]  # (1, T): the same for every row
        else:
            positions = kv_cache.begin(idx, cache_row)  # (B, T): each row from its own length
        return self.compute(idx, positions, targets, kv_cache, head)

    def compute(self, idx, positions, targets=None, kv_cache=None, head=True):
        """forward once the positions are known: the tensor work alone, without the KV cache's
        bookkeeping in Python lists, so that torch.compile makes one graph of it (quantize_weights)."""
        x = self.wte(idx)
        rotary = None
        if self.config.pos_emb == "learned":
            x = x + self.wpe(positions)
        else:
            angles = (positions.float()[..., None] * self.inv_freq)[:, None]  # (B or 1, 1, T, D/2), every head alike
            rotary = angles.cos(), angles.sin()
        x = self.drop(x)
        value_embeddings = [table(idx) for table in self.value_embeddings] or [None] * len(self.blocks)
        for block, value_embedding in zip(self.blocks, value_embeddings):
            x = block(x, rotary, kv_cache, value_embedding)
        if not head:
            return None, None
        logits = self.lm_head(self.norm_f(x))
        if self.config.logit_softcap:
            logits = self.config.logit_softcap * torch.tanh(logits / self.config.logit_softcap)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)

    def new_kv_cache(self, batch_size):
        return KVCache(self.config, batch_size, self.wte.weight.dtype)

    def crop_block_size(self, block_size):
        """Shrink the context (e.g. to fine-tune a checkpoint on shorter windows)."""
        if block_size > self.config.block_size:
            raise ValueError(f"cannot grow block_size from {self.config.block_size} to {block_size}")
        self.config.block_size = block_size
        if self.config.pos_emb == "learned":
            self.wpe.weight = nn.Parameter(self.wpe.weight[:block_size].detach().clone())

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # the tied matrix counts once

    def flops_per_token(self):
        """Training FLOPs per token: 6 per matmul weight (forward + backward) plus attention scores."""
        c = self.config
        lookups = [*self.value_embeddings, *([self.wpe] if c.pos_emb == "learned" else [])]
        if not c.tie_weights:  # an untied embedding is a table lookup, not a matmul
            lookups.append(self.wte)
        matmul_params = self.num_params() - sum(table.weight.numel() for table in lookups)
        return 6 * matmul_params + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, optimizer="adamw"):
        """A list of optimizers that together update every parameter once.

        "adamw": AdamW that decays matrices (matmul weights, embeddings) but not biases and norm
        gains. "muon": the blocks' weight matrices go to Muon (below), everything else to AdamW."""
        check_choice("optimizer", optimizer, ("adamw", "muon"))
        params = [p for p in self.parameters() if p.requires_grad]
        hidden = {id(p) for p in self.blocks.parameters() if p.dim() == 2} if optimizer == "muon" else set()
        groups = [{"params": [p for p in params if p.dim() >= 2 and id(p) not in hidden], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        # The fused kernel updates all parameters in one pass, not in a loop of small ops per parameter.
        optimizers = [torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type in ("cuda", "cpu"))]
        if hidden:
            optimizers.append(Muon([p for p in params if id(p) in hidden], learning_rate, weight_decay=weight_decay))
        return optimizers


def orthogonalize(matrix, steps=5):
    """Approximately U·Vᵀ for matrix = U·S·Vᵀ: every singular value pushed towards 1.

    A quintic Newton-Schulz iteration, x <- a·x + b·(x·xᵀ)·x + c·(x·xᵀ)²·x, with the
    coefficients (3.4445, -4.7750, 2.0315) tuned by Muon's authors to pull singular values
    anywhere in (0, 1] up near 1 in five steps; exact orthogonality is not needed."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = matrix / (matrix.norm() + 1e-7)  # singular values <= 1, where the iteration converges
    wide = x.size(0) <= x.size(1)
    if not wide:
        x = x.T  # x·xᵀ on the short side is the cheaper product
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al., 2024) for weight matrices: Nesterov momentum whose update is
    orthogonalized, so every direction of the matrix moves by a similar amount instead of the
    few largest ones dominating as they do in the raw gradient.

    The update is rescaled to AdamW's typical size (RMS 0.2, as in Liu et al., 2025,
    "Muon is scalable"), so the AdamW learning rate, schedule and weight decay carry over."""

    def __init__(self, params, lr, momentum=0.95, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                momentum = self.state[p].setdefault("momentum", torch.zeros_like(p))
                momentum.mul_(group["momentum"]).add_(p.grad)
                update = orthogonalize(p.grad.add(momentum, alpha=group["momentum"]))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * 0.2 * math.sqrt(max(p.shape)))


def synchronize(device):
    """Wait until a GPU (CUDA or Apple's) has done the work queued on it: it runs behind the Python
    that queues its kernels, so a timing must wait for it to end when the work does."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def measure_peak_flops(device, dtype=torch.float32):
    """Best FLOP/s of large square matmuls on this device: the denominator of MFU."""
    device = torch.device(device)
    size, calls = (8192, 20) if device.type == "cuda" else (2048, 1)
    a, b = torch.randn(2, size, size, device=device, dtype=dtype)
    best = math.inf
    for _ in range(4):  # the first round warms up; the best round is the peak
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 * calls / best


def native_bf16(device):
    """Whether `device` computes bf16 in hardware: CUDA GPUs of compute capability 8.0 on (Ampere
    and newer). Older ones (V100, T4) emulate it, slowly, and torch.cuda.is_bf16_supported()
    counts emulation as support unless including_emulation=False."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_for(device):
    """The precision to run a model in for inference on `device`: bf16 autocast on a CUDA GPU
    with native bf16 (compute capability 8.0 on, Ampere and newer), with TF32 tensor cores for
    the matmuls autocast keeps in fp32. Elsewhere nothing changes: fp32 on CPUs, and on older
    GPUs, where bf16 is emulated (slow) and fp16 could overflow without a loss scale to watch it.
    Scores computed under it should upcast the logits (logits.float()) before any softmax."""
    if not native_bf16(device):
        return contextlib.nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = True
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def int8_linear(x, weight, scale, bias):
    """x (..., K) times the int8 matrix weight (N, K) whose row n is scaled by scale[n], plus bias: (..., N).

    Written as products summed over K rather than as a matmul: torch.compile turns this into one
    loop that reads each int8 weight once and widens it in registers, where a matmul would first
    write the whole matrix out in fp32 (more bytes than the fp32 weights themselves). Run eagerly
    (a model not compiled, or a call past the compiler's limit on graphs), that sum would hold all
    the products in memory at once, so there the weights are widened to fp32 and multiplied instead."""
    if not torch.compiler.is_compiling():
        return F.linear(x, weight.to(x.dtype)) * scale + bias
    # A view of x as it is. The compiler fuses the work that produced x (a norm, an activation)
    # into the loop that reads it, which here would redo that work once for each of the N
    # outputs; taking a view with explicit strides needs x in memory, so it is computed once.
    x = x.as_strided(x.size(), x.stride())
    return (x[..., None, :] * weight).sum(dim=-1) * scale + bias


class Int8Linear(nn.Module):
    """An nn.Linear for inference with int8 weights, one fp32 scale per output row (the row's
    largest |weight| becomes 127). Only the weights are quantized: activations stay fp32, so a
    row's outputs do not depend on the rows beside it in a batch. A linear without a bias gets
    zeros, so that every layer has the same form. Fast only compiled, as quantize_weights does."""

    def __init__(self, linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer("weight", torch.round(weight / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", torch.zeros_like(scale) if linear.bias is None else linear.bias.detach().float())

    def forward(self, x):
        return int8_linear(x, self.weight, self.scale, self.bias)


def replace_linears(model, replacement):
    """Put replacement(linear) in the place of every nn.Linear of the model."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Linear:
                setattr(module, name, replacement(child))


def compute_with_math_attention(model, *args):
    """GPT.compute with attention traced as its plain math (see quantize_weights)."""
    with sdpa_kernel(SDPBackend.MATH):
        return GPT.compute(model, *args)


def quantize_weights(model, scheme):
    """Return the model with its weights quantized for CPU inference; scheme "none" changes nothing.

    "int8": every nn.Linear, the tied output head included, becomes an Int8Linear, while the
    embedding lookup stays fp32. A decoding step of a few rows waits on memory, not arithmetic:
    reading a quarter of the bytes is what makes it faster. The product is int8_linear, and the
    model runs compiled by torch.compile (public API, needing the C++ compiler it uses on CPUs):
    torch's own quantized tensors are deprecated, and torchao's int8 tensors, run eagerly on a
    CPU, widen the whole weight matrix to fp32 at every call or quantize the activations in a
    dozen small ops, which makes them slower than fp32.

    "bf16": every weight in bf16 and the whole forward in bf16 (torch's CPU kernels; norms and
    softmaxes accumulate in fp32 inside them), the rotary frequencies in fp32 (GPT.inv_freq). Half the
    bytes; on CPUs that multiply bf16 matrices in hardware (AMX), a batch of several rows, whose step
    waits on arithmetic more than on memory, decodes faster than in fp32, while one row may not.
    Rounding to bf16 moves the logits by far more than fp32's last bits (eval.py --quantize=bf16
    measures what it costs). Changes the model in place."""
    check_choice("quantize", scheme, ("none", "int8", "bf16"))
    if scheme == "none":
        return model
    if model.wte.weight.device.type != "cpu":
        raise UsageError(f"{scheme} weights run on the CPU only (use --device=cpu)")
    model.eval()
    if scheme == "bf16":
        return model.to(torch.bfloat16)
    # The model's tensor work (GPT.compute) compiled as one graph per kind of call (a prompt, a
    # step of one row, of several): the products of every layer, and the norms, attention and
    # activations between them, run as a few compiled loops, without Python between layers. Sizes
    # are symbolic, so steps of any number of rows and lengths reuse those graphs. Attention is
    # traced as its plain math, which the compiler fuses with the work around it; the fused CPU
    # kernel it would otherwise call costs more to set up than a decoding step's few keys take.
    replace_linears(model, Int8Linear)
    # The model is an argument of the compiled function, not inside it, so that a deep copy computes
    # with its own weights.
    compiled = torch.compile(compute_with_math_attention, dynamic=True)
    model.compute = functools.partial(compiled, model)
    try:  # compile a one-row step now: a missing compiler is a one-line error, not a traceback later
        with torch.inference_mode():
            model(torch.zeros(1, 1, dtype=torch.long), kv_cache=model.new_kv_cache(1))
    except Exception as e:
        raise UsageError(f"int8 weights need torch.compile, which fails here: {first_line(e)}") from e
    return model


def resolve_device(name, local_rank=None):
    """The torch.device that --device names (auto: CUDA when there is one), checked by putting a
    tensor on it, so that every script refuses an unusable device with the same one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"  # one GPU per process under torchrun
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"unknown device {name!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device is cuda but no CUDA GPU is available (use --device=cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device is mps but no Apple GPU is available (use --device=cpu)")
    try:  # a GPU index past the last one, or a backend this torch lacks, fails here, not as a bad checkpoint
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as e:
        raise UsageError(f"device {name!r} cannot be used: {first_line(e)}") from e
    return device


def tokenizer_hash(tokenizer_text):
    """The hash that ties a checkpoint to its tokenizer: sha256 of the tokenizer.json text."""
    return hashlib.sha256(tokenizer_text.encode("utf-8")).hexdigest()


def read_checkpoint(path, device):
    """torch.load a checkpoint safely; every way it can be broken becomes a one-line UsageError."""
    if not os.path.isfile(path):
        raise UsageError(f"no checkpoint at {path} (train one with train.py, or set --out_dir)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, disallowed pickled objects ...
        raise UsageError(f"cannot read checkpoint {path} (truncated or not a checkpoint): {first_line(e)}") from e
    required = ("model_args", "model", "tokenizer", "tokenizer_sha256")
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in required):
        raise UsageError(f"{path} is not a checkpoint written by train.py")
    if tokenizer_hash(ckpt["tokenizer"]) != ckpt["tokenizer_sha256"]:
        raise UsageError(f"checkpoint {path} is corrupt: its tokenizer does not match its sha256")
    return ckpt


def model_from_checkpoint(ckpt, path="checkpoint", **overrides):
    """Rebuild the GPT a checkpoint describes (overrides: e.g. a new dropout) and load its weights."""
    try:
        model = GPT(GPTConfig(**{**ckpt["model_args"], **overrides}))
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError) as e:
        raise UsageError(f"{path} does not fit this version of model.py: {first_line(e)}") from e
    return model


def checkpoint_path(path):
    """The checkpoint file that path names: a ckpt.pt, or the one in the out_dir train.py wrote it in."""
    return os.path.join(path, "ckpt.pt") if os.path.isdir(path) else path


def load_checkpoint(path, device):
    """Return (model in eval mode on device, its tokenizer, the checkpoint dict) of the checkpoint
    at path (see checkpoint_path)."""
    path = checkpoint_path(path)
    ckpt = read_checkpoint(path, device)
    model = model_from_checkpoint(ckpt, path).to(device).eval()
    tokenizer = bpe.Tokenizer.from_json(ckpt["tokenizer"])
    if tokenizer.normalization is None:  # checkpoints before version 2 tokenizers kept it beside them
        tokenizer.normalization = ckpt.get("normalization")
    return model, tokenizer, ckpt
