import copy
import hashlib
import math
import os
import re
from dataclasses import asdict

import pytest
import torch

from bpe import Tokenizer
from common import UsageError
import model as model_module
from model import (GPT, GPTConfig, Int8Linear, load_checkpoint, measure_peak_flops,
                   orthogonalize, quantize_weights, read_checkpoint, resolve_device)


def tiny(seed=0, **kwargs):
    args = dict(block_size=16, vocab_size=97, n_layer=2, n_head=2, n_embd=32)
    args.update(kwargs)
    torch.manual_seed(seed)
    return GPT(GPTConfig(**args)).eval()


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
@pytest.mark.parametrize("norm,mlp,qk_norm,tie_weights", [("layernorm", "gelu", False, True),
                                                          ("rmsnorm", "relu2", True, False)])
def test_shapes_and_initial_loss(pos_emb, norm, mlp, qk_norm, tie_weights):
    model = tiny(pos_emb=pos_emb, norm=norm, mlp=mlp, qk_norm=qk_norm, tie_weights=tie_weights)
    idx = torch.randint(0, 97, (3, 16))
    logits, loss = model(idx)
    assert logits.shape == (3, 16, 97) and loss is None
    logits, loss = model(idx, targets=torch.randint(0, 97, (3, 16)))
    # small initial weights give near-uniform predictions: loss close to ln(vocab)
    assert abs(loss.item() - math.log(97)) < 0.1


@pytest.mark.parametrize("attention_dropout", [True, False])
def test_attention_dropout_can_be_left_to_the_residual_branches(attention_dropout):
    config = model_module.GPTConfig(n_embd=32, n_head=4, dropout=0.5, attention_dropout=attention_dropout)
    attention = model_module.CausalSelfAttention(config, layer=0).train()
    attention.resid_dropout = torch.nn.Identity()  # what is left: dropout inside attention, if any
    x = torch.randn(2, 16, 32)
    first, second = (attention(x, None, None) for _ in range(2))
    assert torch.equal(first, second) != attention_dropout


@pytest.mark.parametrize("cap", [2.0, 5.0])
def test_logit_softcap_squashes_the_logits_into_its_bounds(cap):
    plain, capped = tiny(), tiny(logit_softcap=cap)  # the same weights: one seed
    with torch.no_grad():
        for model in (plain, capped):
            model.lm_head.weight.mul_(50)  # logits far past the cap
    idx = torch.randint(0, 97, (2, 16))
    targets = torch.randint(0, 97, (2, 16))
    raw, _ = plain(idx)
    logits, loss = capped(idx, targets)
    assert raw.abs().max() > 2 * cap
    assert logits.abs().max() <= cap  # tanh rounds to 1 in fp32 far out
    torch.testing.assert_close(logits, cap * torch.tanh(raw / cap))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.view(-1, 97), targets.view(-1)))


def test_value_embeddings_add_each_layers_own_token_vectors_to_the_values():
    plain, valued = tiny(), tiny(value_embeddings=True)
    assert len(valued.value_embeddings) == 2
    assert valued.num_params() == plain.num_params() + 2 * 97 * 32
    assert valued.flops_per_token() == plain.flops_per_token()  # lookups, not matmuls
    missing, unexpected = valued.load_state_dict(plain.state_dict(), strict=False)  # the same weights but the tables
    assert not unexpected and all(name.startswith("value_embeddings.") for name in missing)
    idx = torch.randint(0, 97, (2, 16))
    idx[1][idx[1] == idx[0, 0]] = (idx[0, 0] + 1) % 97  # the second row never reads the first row's first token
    with torch.no_grad():
        for table in valued.value_embeddings:
            table.weight.zero_()
        torch.testing.assert_close(valued(idx)[0], plain(idx)[0])
        valued.value_embeddings[1].weight[idx[0, 0]] = 1.0  # that token's vector, in the last layer
        changed = (valued(idx)[0] - plain(idx)[0]).abs().amax(dim=-1) > 1e-4
    assert changed[0].all() and not changed[1].any()  # every position of the first row attends to it
    adamw, muon = valued.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", "muon")
    muon_params = {id(p) for group in muon.param_groups for p in group["params"]}
    assert not muon_params & {id(table.weight) for table in valued.value_embeddings}


def test_ignore_index_and_too_long_input():
    model = tiny()
    idx = torch.randint(0, 97, (2, 8))
    targets = torch.full((2, 8), -1)
    targets[:, 0] = idx[:, 1]
    logits, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits[:, 0], idx[:, 1])
    assert torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_untied_head_has_its_own_matrix_and_no_lookup_flops():
    tied, untied = tiny(), tiny(tie_weights=False)
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() == tied.num_params() + 97 * 32
    # the extra matrix is the head's matmul; the embedding it frees from that role is a lookup
    assert untied.flops_per_token() == tied.flops_per_token()


def test_head_is_tied_and_residual_projections_are_scaled():
    model = tiny(n_layer=8, n_embd=64)
    assert model.lm_head.weight is model.wte.weight
    assert model.num_params() == sum(p.numel() for p in set(model.parameters()))
    proj_std = model.blocks[0].mlp.proj.weight.std().item()
    fc_std = model.blocks[0].mlp.fc.weight.std().item()
    assert abs(fc_std - 0.02) < 0.002
    assert abs(proj_std - 0.02 / math.sqrt(16)) < 0.001


@pytest.mark.parametrize("settings", [dict(pos_emb="rope"), dict(pos_emb="learned"), dict(qk_norm=True),
                                      dict(value_embeddings=True)])
def test_kv_cache_matches_full_forward(settings):
    model = tiny(**settings)
    if settings.get("value_embeddings"):  # initialised at std 0.02, they would barely move the logits
        with torch.no_grad():
            for table in model.value_embeddings:
                table.weight.normal_()
    idx = torch.randint(0, 97, (2, 16))
    full, _ = model(idx)
    cache = model.new_kv_cache(2)
    pieces = [model(idx[:, :7], kv_cache=cache)[0]]  # a prompt, then one token at a time
    pieces += [model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(7, 13)]
    pieces.append(model(idx[:, 13:], kv_cache=cache)[0])  # a chunk on top of a filled cache
    assert cache.lengths == [16, 16]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
def test_full_cache_refuses_more_tokens(pos_emb):
    model = tiny(pos_emb=pos_emb)
    cache = model.new_kv_cache(1)
    model(torch.zeros(1, 16, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="full"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
    assert cache.lengths == [16]


def test_kv_cache_copy_rows_follows_beams():
    model = tiny()
    idx = torch.randint(0, 97, (3, 9))
    cache = model.new_kv_cache(4)
    model(idx[:, :8], kv_cache=cache)
    cache.copy_rows([2, 2, 0, 1], [0, 1, 2, 3])
    assert cache.lengths == [8, 8, 8, 8]
    logits, _ = model(idx[[2, 2, 0, 1], 8:], kv_cache=cache)
    full, _ = model(idx[[2, 2, 0, 1]])
    torch.testing.assert_close(logits[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos_emb,qk_norm,prompt_head", [("rope", False, True), ("learned", False, True),
                                                          ("rope", True, True), ("rope", False, False),
                                                          ("learned", False, False)])
def test_kv_cache_rows_of_different_lengths_decode_together(pos_emb, qk_norm, prompt_head):
    """Rows filled one at a time to different lengths (with or without the output head), then
    run together (one new token each, then three), each give the logits of a full forward over
    their own tokens."""
    model = tiny(pos_emb=pos_emb, qk_norm=qk_norm)
    idx = torch.randint(0, 97, (3, 16))
    full, _ = model(idx)
    lengths = [2, 9, 5]
    cache = model.new_kv_cache(4)
    head_calls = []
    hook = model.lm_head.register_forward_hook(lambda module, inputs, output: head_calls.append(output.shape))
    for row, length in enumerate(lengths):  # into cache rows 1, 2, 3
        logits, loss = model(idx[row:row + 1, :length], kv_cache=cache, cache_row=row + 1, head=prompt_head)
        assert (logits is None and loss is None) != prompt_head
    hook.remove()
    assert len(head_calls) == (3 if prompt_head else 0)
    assert cache.lengths == [0, 2, 9, 5]
    one, _ = model(torch.stack([idx[row, n:n + 1] for row, n in enumerate(lengths)]), kv_cache=cache, cache_row=1)
    three, _ = model(torch.stack([idx[row, n + 1:n + 4] for row, n in enumerate(lengths)]), kv_cache=cache,
                     cache_row=1)
    assert cache.lengths == [0, 6, 13, 9]
    for row, n in enumerate(lengths):
        torch.testing.assert_close(one[row, 0], full[row, n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(three[row], full[row, n + 1:n + 4], atol=1e-5, rtol=1e-5)
    cache.copy_rows([3], [0])  # row 0 now continues what row 3 held
    cache.reset(3)
    logits, _ = model(idx[2:3, 9:10], kv_cache=cache, cache_row=0)
    torch.testing.assert_close(logits[0, 0], full[2, 9], atol=1e-5, rtol=1e-5)
    assert cache.lengths == [10, 6, 13, 0]
    with pytest.raises(ValueError, match="outside"):
        model(idx[:3, :1], kv_cache=cache, cache_row=2)
    with pytest.raises(ValueError, match="full"):
        model(idx[:2, :4], kv_cache=cache, cache_row=1)


@pytest.mark.parametrize("bias,tie_weights", [(False, True), (True, False)])
def test_int8_replaces_every_linear_and_nothing_else(bias, tie_weights):
    """Every linear layer becomes an Int8Linear whose weights are the fp32 ones rounded to a
    per-row int8 grid; the embedding (the tied head's matrix) and every other parameter stay as
    they were, and the logits stay close to fp32's, the same with and without the KV cache."""
    model = tiny(bias=bias, tie_weights=tie_weights)
    idx = torch.randint(0, 97, (3, 16))
    with torch.no_grad():
        expected, _ = model(idx)
        state = {name: p.clone() for name, p in model.state_dict().items()}
        fc = model.blocks[0].mlp.fc.weight.clone()
        assert quantize_weights(model, "int8") is model
        linears = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]
        assert len(linears) == 4 * 2 + 1 and all(type(m) is Int8Linear for m in linears)
        assert torch.equal(model.wte.weight, state["wte.weight"])
        int8 = model.blocks[0].mlp.fc
        assert int8.weight.dtype == torch.int8 and int8.weight.abs().amax(dim=1).tolist() == [127] * 128
        torch.testing.assert_close(int8.weight * int8.scale[:, None], fc, atol=fc.abs().max().item() / 254, rtol=0)
        kept = {name for name in state if not name.endswith(".weight") or "norm" in name or name == "wte.weight"}
        assert all(torch.equal(model.state_dict()[name], state[name]) for name in kept)
        logits, _ = model(idx)
        cache = model.new_kv_cache(3)
        model(idx[:, :10], kv_cache=cache, head=False)
        cached, _ = model(idx[:, 10:], kv_cache=cache)
    assert (logits - expected).norm() / expected.norm() < 0.05
    torch.testing.assert_close(cached, logits[:, 10:], atol=1e-5, rtol=1e-5)


def test_a_copy_of_an_int8_model_computes_with_its_own_weights():
    """The compiled function of an int8 model takes the model as an argument: a deep copy given other
    weights gives that copy's logits, and the original its own; int8 models of other shapes and
    settings in the same process do not reuse its compiled graphs."""
    first, other = quantize_weights(tiny(), "int8"), quantize_weights(tiny(seed=1), "int8")
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        expected_first, expected_other = first(idx)[0], other(idx)[0]
        copy_of_first = copy.deepcopy(first)
        copy_of_first.load_state_dict(other.state_dict())
        torch.testing.assert_close(copy_of_first(idx)[0], expected_other)
        torch.testing.assert_close(first(idx)[0], expected_first)
        # and a model of another vocabulary and activation, compiled in the same process, its own
        fp32 = tiny(vocab_size=64, mlp="relu2")
        expected, _ = fp32(idx % 64)
        logits, _ = quantize_weights(copy.deepcopy(fp32), "int8")(idx % 64)
    assert (logits - expected).norm() / expected.norm() < 0.05
    assert not torch.allclose(expected_first, expected_other)


def test_int8_without_a_working_compiler_is_a_one_line_error(monkeypatch):
    """An int8 model runs compiled; where torch.compile cannot work (no C++ compiler), quantizing
    says so in one line, at once, not at the first token."""
    def failing_compile(function, **options):
        def compiled(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n  (a long traceback)")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    with pytest.raises(UsageError, match=r"^int8 weights need torch.compile, which fails here: InvalidCxxCompiler: "
                                         r"No working C\+\+ compiler found$"):
        quantize_weights(tiny(), "int8")


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
def test_crop_block_size_keeps_predictions(pos_emb):
    model = tiny(pos_emb=pos_emb)
    idx = torch.randint(0, 97, (1, 8))
    before, _ = model(idx)
    model.crop_block_size(8)
    after, _ = model(idx)
    assert model.config.block_size == 8
    torch.testing.assert_close(after, before)
    if pos_emb == "learned":
        assert model.wpe.weight.shape == (8, 32)
    with pytest.raises(ValueError, match="longer than block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_optimizer_decays_only_matrices():
    model = tiny(bias=True)
    [optimizer] = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert model.wte.weight in decay["params"]


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model = tiny(bias=True)
    adamw, muon = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", optimizer="muon")
    in_muon = {id(p) for group in muon.param_groups for p in group["params"]}
    in_adamw = {id(p) for group in adamw.param_groups for p in group["params"]}
    assert in_muon == {id(p) for p in model.blocks.parameters() if p.dim() == 2}
    assert not in_muon & in_adamw and len(in_muon | in_adamw) == len(list(model.parameters()))
    assert id(model.wte.weight) in in_adamw


@pytest.mark.parametrize("shape", [(8, 8), (16, 48), (48, 16)])
def test_orthogonalize_brings_singular_values_near_one(shape):
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    before, after = torch.linalg.svdvals(matrix), torch.linalg.svdvals(orthogonalize(matrix))
    assert after.min() > 0.6 and after.max() < 1.2  # Newton-Schulz is loose, by design
    assert before.max() / before.min() > 3 and after.max() / after.min() < 1.7


def test_muon_trains_a_model():
    torch.manual_seed(0)
    model = tiny()
    idx = torch.randint(0, 97, (4, 16))
    optimizers = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), "cpu", optimizer="muon")
    losses = []
    for _ in range(30):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_flops_per_token():
    model = tiny(pos_emb="learned")
    n = model.num_params() - 16 * 32  # position table: a lookup, no matmul
    assert model.flops_per_token() == 6 * n + 12 * 2 * 2 * 16 * 16
    untied = tiny(tie_weights=False)  # rotary positions; the input embedding is a lookup, the head a matmul
    assert untied.flops_per_token() == 6 * (untied.num_params() - 97 * 32) + 12 * 2 * 2 * 16 * 16


def test_measure_peak_flops_is_the_best_round_of_products(monkeypatch):
    """Four timed rounds of one 2048 x 2048 product on a CPU: the FLOPs of a round over the
    fastest round's seconds (the clock here is a fake one, so that no speed is asserted)."""
    products = []
    real_matmul = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: products.append((a.shape, b.shape)) or real_matmul(a, b))
    ticks = iter([0.0, 4.0, 10.0, 12.0, 20.0, 23.0, 30.0, 35.0])  # rounds of 4, 2, 3 and 5 seconds
    monkeypatch.setattr(model_module.time, "perf_counter", lambda: next(ticks))
    assert measure_peak_flops("cpu") == 2 * 2048**3 / 2.0
    assert products == [((2048, 2048), (2048, 2048))] * 4


def write_checkpoint(path, model, tokenizer_text='{"version": 1}'):
    torch.save({"model_args": asdict(model.config), "model": model.state_dict(),
                "tokenizer": tokenizer_text,
                "tokenizer_sha256": hashlib.sha256(tokenizer_text.encode()).hexdigest()}, path)


def test_read_checkpoint_round_trip(tmp_path):
    model = tiny()
    path = str(tmp_path / "ckpt.pt")
    write_checkpoint(path, model)
    ckpt = read_checkpoint(path, "cpu")
    assert ckpt["tokenizer"] == '{"version": 1}'
    torch.testing.assert_close(ckpt["model"]["wte.weight"], model.wte.weight)


def test_load_checkpoint_takes_the_file_or_its_out_dir(tmp_path):
    model, tokenizer_text = tiny(), Tokenizer([]).to_json()
    write_checkpoint(str(tmp_path / "ckpt.pt"), model, tokenizer_text)
    for path in (tmp_path / "ckpt.pt", tmp_path):
        loaded, tokenizer, ckpt = load_checkpoint(str(path), "cpu")
        assert not loaded.training and ckpt["tokenizer"] == tokenizer_text and tokenizer.to_json() == tokenizer_text
        torch.testing.assert_close(loaded.wte.weight, model.wte.weight)
    with pytest.raises(UsageError, match=f"no checkpoint at {tmp_path / 'empty' / 'ckpt.pt'}"):
        (tmp_path / "empty").mkdir()
        load_checkpoint(str(tmp_path / "empty"), "cpu")


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "not_a_checkpoint", "wrong_hash",
                                    "wrong_shape"])
def test_broken_checkpoints_are_usage_errors(tmp_path, damage):
    path = str(tmp_path / "ckpt.pt")
    model = tiny()
    if damage != "missing":
        write_checkpoint(path, model)
    if damage == "truncated":
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    elif damage == "garbage":
        with open(path, "wb") as f:
            f.write(os.urandom(5000))
    elif damage == "not_a_checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    elif damage == "wrong_hash":
        ckpt = torch.load(path, weights_only=True)
        ckpt["tokenizer"] = '{"version": 2}'
        torch.save(ckpt, path)
    elif damage == "wrong_shape":
        ckpt = torch.load(path, weights_only=True)
        ckpt["model_args"]["n_embd"] = 64
        torch.save(ckpt, path)
    with pytest.raises(UsageError) as error:
        load_checkpoint(path, "cpu")
    assert "\n" not in str(error.value) and path in str(error.value)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="unknown device 'gpu'"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_a_one_line_error():
    with pytest.raises(UsageError, match=re.escape("device is cuda but no CUDA GPU is available (use --device=cpu)")):
        resolve_device("cuda", local_rank=1)


def test_int8_linear_eagerly_gives_what_the_compiled_loop_gives():
    """Int8Linear outside a compiled model (or past the compiler's limit on graphs) widens its
    weights instead of summing all the products at once: the same outputs, within rounding."""
    linear = torch.nn.Linear(64, 24)
    int8 = Int8Linear(linear)
    x = torch.randn(3, 5, 64)
    eager = int8(x)
    torch.testing.assert_close(eager, torch.compile(int8, dynamic=True)(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eager, linear(x), atol=0.02, rtol=0)
