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

import hashlib
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import bpe
from common import UsageError


@dataclass
class GPTConfig:
    block_size: int = 256  # longest context the model attends over
    vocab_size: int = 8192
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm; without them training is a bit faster
    pos_emb: str = "rope"  # "rope" (rotary, relative) or "learned" (absolute embedding table)
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    mlp: str = "gelu"  # MLP activation: "gelu" or "relu2" (squared ReLU)
    qk_norm: bool = False  # RMS-normalise queries and keys per head (bounds attention logits)
    tie_weights: bool = True  # the output head shares the token embedding's matrix

    def __post_init__(self):
        choices = {"pos_emb": ("rope", "learned"), "norm": ("layernorm", "rmsnorm"),
                   "mlp": ("gelu", "relu2")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UsageError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
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
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, for incremental decoding.

    Buffers are allocated on first use, in the dtype the attention produces (bf16 under
    autocast). `length` is how many tokens are held, which is also the position of the next one.
    """

    def __init__(self, config, batch_size):
        self.config = config
        self.batch_size = batch_size
        self.k = self.v = None
        self.length = 0

    def __len__(self):
        return self.length

    def check_room(self, num_new):
        """Return the position of the first of num_new tokens; refuse to pass block_size.

        A full cache is not slid: in a model of two or more layers the cached keys were
        computed with the dropped tokens in view, so the caller starts a fresh window instead.
        """
        if self.length + num_new > self.config.block_size:
            raise ValueError(f"KV cache is full ({self.length} + {num_new} tokens > block_size "
                             f"{self.config.block_size}): rebuild it from the last tokens")
        return self.length

    def update(self, layer, k, v):
        """Store this layer's new keys/values (B, H, T, D); return all it holds, the new ones included."""
        if self.k is None:
            B, H, _, D = k.shape
            if B != self.batch_size:
                raise ValueError(f"KV cache was made for batch size {self.batch_size}, got {B}")
            shape = (self.config.n_layer, B, H, self.config.block_size, D)
            self.k = torch.zeros(shape, dtype=k.dtype, device=k.device)
            self.v = torch.zeros(shape, dtype=v.dtype, device=v.device)
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, num_new):
        self.length += num_new

    def reorder(self, batch_indices):
        """Keep the rows batch_indices (beam search); a row may be repeated or dropped."""
        batch_indices = torch.as_tensor(batch_indices, dtype=torch.long)
        self.batch_size = len(batch_indices)
        if self.k is not None:
            batch_indices = batch_indices.to(self.k.device)
            self.k = self.k[:, batch_indices]
            self.v = self.v[:, batch_indices]


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.n_head = config.n_head
        self.layer = layer  # index into the KV cache
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        head_size = config.n_embd // config.n_head
        self.q_norm = nn.RMSNorm(head_size) if config.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_size) if config.qk_norm else nn.Identity()
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rotary, kv_cache):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in self.qkv(x).split(C, dim=2))
        q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        past = 0
        if kv_cache is not None:
            past = len(kv_cache)
            k, v = kv_cache.update(self.layer, k, v)
        dropout = self.dropout if self.training else 0.0
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif T == 1:  # one new token sees every key: no mask to build
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:  # new query i sits at position past + i and sees every key up to there
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
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

    def forward(self, x, rotary, kv_cache):
        x = x + self.attn(self.norm1(x), rotary, kv_cache)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_emb == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        else:
            head_size = config.n_embd // config.n_head
            inv_freq = 1.0 / 10000 ** (torch.arange(0, head_size, 2).float() / head_size)
            self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.norm_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight  # one matrix maps tokens in and out

        self.apply(self._init_weights)
        # Each block adds its output projections to the residual stream; scaling them keeps
        # the stream's variance from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, kv_cache=None):
        B, T = idx.shape
        if kv_cache is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
            start = 0
        else:
            start = kv_cache.check_room(T)
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.wte(idx)
        rotary = None
        if self.config.pos_emb == "learned":
            x = x + self.wpe(positions)
        else:
            angles = positions.float()[:, None] * self.inv_freq[None, :]
            rotary = angles.cos(), angles.sin()
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, rotary, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        logits = self.lm_head(self.norm_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    def new_kv_cache(self, batch_size):
        return KVCache(self.config, batch_size)

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
        lookups = [self.wpe] if c.pos_emb == "learned" else []
        if not c.tie_weights:  # an untied embedding is a table lookup, not a matmul
            lookups.append(self.wte)
        matmul_params = self.num_params() - sum(table.weight.numel() for table in lookups)
        return 6 * matmul_params + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size

    def estimate_mfu(self, tokens_per_second, peak_flops):
        """Model FLOPs utilisation: the fraction of the device's peak spent on the model's arithmetic."""
        return tokens_per_second * self.flops_per_token() / peak_flops

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, optimizer="adamw"):
        """A list of optimizers that together update every parameter once.

        "adamw": AdamW that decays matrices (matmul weights, embeddings) but not biases and norm
        gains. "muon": the blocks' weight matrices go to Muon (below), everything else to AdamW."""
        if optimizer not in ("adamw", "muon"):
            raise UsageError(f"optimizer must be 'adamw' or 'muon', got {optimizer!r}")
        params = [p for p in self.parameters() if p.requires_grad]
        hidden = {id(p) for p in self.blocks.parameters() if p.dim() == 2} if optimizer == "muon" else set()
        groups = [{"params": [p for p in params if p.dim() >= 2 and id(p) not in hidden], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        # The fused kernel updates all parameters in one pass: several times faster than the loop.
        fused = device_type in ("cuda", "cpu")
        optimizers = [torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)]
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


def measure_peak_flops(device, dtype=torch.float32):
    """Best FLOP/s of large square matmuls on this device: the denominator of MFU."""
    device = torch.device(device)
    size, calls = (8192, 20) if device.type == "cuda" else (2048, 1)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = math.inf
    for _ in range(4):  # the first round warms up; the best round is the peak
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 * calls / best


def tokenizer_hash(tokenizer_text):
    """The hash that ties a checkpoint to its tokenizer: sha256 of the tokenizer.json text."""
    return hashlib.sha256(tokenizer_text.encode("utf-8")).hexdigest()


def read_checkpoint(path, device):
    """torch.load a checkpoint safely; every way it can be broken becomes a one-line UsageError."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, disallowed pickled objects ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot read checkpoint {path} (truncated or not a checkpoint): {reason}") from e
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
        reason = str(e).strip().splitlines()[0]
        raise UsageError(f"{path} does not fit this version of model.py: {reason}") from e
    return model


def load_checkpoint(path, device):
    """Return (model in eval mode on device, its tokenizer, the checkpoint dict)."""
    ckpt = read_checkpoint(path, device)
    model = model_from_checkpoint(ckpt, path).to(device).eval()
    tokenizer = bpe.Tokenizer.from_json(ckpt["tokenizer"])
    return model, tokenizer, ckpt
