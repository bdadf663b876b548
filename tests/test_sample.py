import hashlib
import itertools
import os
import subprocess
import sys

import pytest
import torch

import sample
from bpe import Tokenizer
from conftest import PERSIAN, ROOT
from model import GPT, GPTConfig

@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(PERSIAN * 3, vocab_size=300)


def tiny_model(vocab_size, pos_emb="rope", n_layer=2, block_size=16, seed=0):
    """A random model with sharp distributions, so greedy choices are far from ties."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=2,
                          n_embd=32, pos_emb=pos_emb)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5)
    return model


# -----------------------------------------------------------------------------
# decoding filters

@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (50, 1.0), (1000, 1.0)])
def test_disabled_filters_leave_distribution_unchanged(top_k, top_p):
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample.filter_logits(logits, 1.0, top_k, top_p), logits)


def test_top_k_keeps_the_k_most_likely():
    logits = torch.tensor([[0.5, 3.0, -1.0, 2.0, 1.0]])
    kept = torch.isfinite(sample.filter_logits(logits, top_k=3))
    assert kept.tolist() == [[False, True, False, True, True]]


@pytest.mark.parametrize("top_p, expected", [(0.4, [1, 0, 0, 0]), (0.7, [1, 1, 0, 0]),
                                             (0.9, [1, 1, 1, 0]), (0.99, [1, 1, 1, 1])])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    probs = torch.tensor([[0.05, 0.3, 0.5, 0.15]])
    filtered = sample.filter_logits(probs.log(), top_p=top_p)
    order = [2, 1, 3, 0]  # most likely first
    assert torch.isfinite(filtered)[0, order].int().tolist() == expected
    kept = torch.softmax(filtered, dim=-1)[0, order][:sum(expected)]
    assert torch.allclose(kept, probs[0, order][:sum(expected)] / probs[0, order][:sum(expected)].sum())


def test_top_p_applies_to_what_top_k_leaves():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # alone, top_p=0.6 keeps 0.5 and 0.3; after top_k=2 the two hold 0.625 and 0.375, so one is enough
    assert torch.isfinite(sample.filter_logits(logits, top_p=0.6)).sum() == 2
    kept = torch.isfinite(sample.filter_logits(logits, top_k=2, top_p=0.6))
    assert kept.tolist() == [[True, False, False, False]]


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, 2.0, 4.0]])
    assert torch.allclose(sample.filter_logits(logits, temperature=0.5), logits * 2)


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0, -0.5]])
    context = torch.tensor([[0, 1, 0]])  # token 0 twice, token 1 once
    before = torch.softmax(logits, dim=-1)
    after = torch.softmax(sample.apply_repetition_penalty(logits, context, 1.5), dim=-1)
    assert after[0, 0] < before[0, 0] and after[0, 1] < before[0, 1]
    assert (after[0, 2:] > before[0, 2:]).all()
    assert torch.equal(sample.apply_repetition_penalty(logits, context, 1.0), logits)


def test_top_k_one_equals_greedy():
    model = tiny_model(64)
    greedy = list(sample.generate(model, [1, 2, 3], 30, greedy=True))
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        assert list(sample.generate(model, [1, 2, 3], 30, top_k=1, generator=generator)) == greedy


# -----------------------------------------------------------------------------
# the KV cache

@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
@pytest.mark.parametrize("n_layer, prompt_length, new_tokens",
                         [(3, 4, 12), (3, 4, 40), (1, 4, 40), (3, 20, 30)])
def test_cached_and_uncached_greedy_agree(pos_emb, n_layer, prompt_length, new_tokens):
    """Within the context, past it (the context restarts twice in 40 tokens) and from a prompt
    longer than the context."""
    for seed in range(3):
        model = tiny_model(64, pos_emb, n_layer, block_size=16, seed=seed)
        prompt = list(range(1, prompt_length + 1))
        cached = list(sample.generate(model, prompt, new_tokens, greedy=True, use_cache=True))
        uncached = list(sample.generate(model, prompt, new_tokens, greedy=True, use_cache=False))
        assert len(cached) == new_tokens and cached == uncached


def test_cache_runs_the_model_on_one_new_position_per_token():
    model = tiny_model(64, block_size=16)
    lengths = []
    model.register_forward_pre_hook(lambda module, args: lengths.append(args[0].size(1)))
    list(sample.generate(model, [1, 2, 3, 4], 30, greedy=True))
    # the prompt, then one token at a time; at 17 tokens of context it restarts from the last 8
    assert lengths == [4] + [1] * 12 + [8] + [1] * 8 + [8] + [1] * 7


def test_sampling_with_same_seed_is_reproducible_with_and_without_cache():
    model = tiny_model(64, "learned", block_size=16)
    runs = [list(sample.generate(model, [1], 30, temperature=0.9, top_p=0.9, use_cache=use_cache,
                                 generator=torch.Generator().manual_seed(7)))
            for use_cache in (True, False, True)]
    assert runs[0] == runs[1] == runs[2]


def test_generation_stops_at_a_stop_token():
    model = tiny_model(64)
    free = list(sample.generate(model, [1, 2], 30, greedy=True))
    stopped = list(sample.generate(model, [1, 2], 30, greedy=True, stop_ids=(free[5],)))
    assert stopped == free[:free.index(free[5])]


def test_beam_search_with_one_beam_is_greedy():
    model = tiny_model(64)
    assert sample.beam_search(model, [3, 4], 1, 20) == list(sample.generate(model, [3, 4], 20, greedy=True))


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
@pytest.mark.parametrize("block_size", [6, 4])
def test_beam_search_wide_enough_finds_the_most_likely_sequence(pos_emb, block_size):
    """With as many beams as there are two-token sequences, three steps search exhaustively
    (block_size 4: the last step restarts the context from its last 2 tokens, cache included)."""
    vocab_size, prompt = 6, [1, 2, 3]
    model = tiny_model(vocab_size, pos_emb, block_size=block_size)
    best = sample.beam_search(model, prompt, vocab_size ** 2, 3)
    sequences = torch.tensor([prompt + list(s) for s in itertools.product(range(vocab_size), repeat=3)])
    contexts = {6: [slice(0, 3), slice(0, 4), slice(0, 5)], 4: [slice(0, 3), slice(0, 4), slice(3, 5)]}
    with torch.no_grad():
        log_probs = sum(torch.log_softmax(model(sequences[:, context])[0][:, -1], dim=-1)
                        .gather(1, sequences[:, t:t + 1]).squeeze(1)
                        for t, context in zip(range(3, 6), contexts[block_size]))
    assert best == sequences[log_probs.argmax(), 3:].tolist()


def test_beam_search_never_returns_a_stop_token():
    model = tiny_model(16)
    for stop in range(4):
        assert stop not in sample.beam_search(model, [5], 3, 12, stop_ids=(stop,))


# -----------------------------------------------------------------------------
# streaming text

@pytest.mark.parametrize("trained", [False, True])
def test_stream_never_splits_a_character(tokenizer, trained):
    bytes_only = Tokenizer([])  # every byte its own token: every Persian letter is split in two
    tok = tokenizer if trained else bytes_only
    text = " ".join(PERSIAN) + " 😀"
    ids = tok.encode(text)
    pieces = list(sample.stream_text(tok, ids))
    assert "".join(pieces) == text
    assert all(piece and "\ufffd" not in piece for piece in pieces)
    if not trained:
        assert len(pieces) == len(text)  # one piece per character, however many bytes it has


# -----------------------------------------------------------------------------
# the command line

@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, tokenizer):
    model = tiny_model(tokenizer.vocab_size, "learned", block_size=32)
    tokenizer_json = tokenizer.to_json()
    out_dir = tmp_path_factory.mktemp("out")
    torch.save({"model_args": vars(model.config), "model": model.state_dict(), "iter_num": 0,
                "tokenizer": tokenizer_json,
                "tokenizer_sha256": hashlib.sha256(tokenizer_json.encode()).hexdigest()},
               out_dir / "ckpt.pt")
    return out_dir


def run_sample(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), *args], capture_output=True,
                          text=True, encoding="utf-8", cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = run_sample(f"--out_dir={tmp_path}", "--start=سلام")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "ckpt.pt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_prompt_from_file_and_streamed_output(checkpoint_dir, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("زبان فارسی", encoding="utf-8")
    result = run_sample(f"--out_dir={checkpoint_dir}", f"--start=FILE:{prompt}", "--max_new_tokens=20",
                        "--num_samples=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("زبان فارسی") == 2


def test_long_prompt_is_cropped_with_a_notice(checkpoint_dir, capsys):
    sample.main([f"--out_dir={checkpoint_dir}", f"--start={' '.join(PERSIAN)}", "--max_new_tokens=5"])
    assert "keeping the last 32" in capsys.readouterr().err


@pytest.mark.parametrize("options", [["--greedy=True"], ["--beams=3"], ["--use_cache=False"]])
def test_empty_prompt_starts_a_document(checkpoint_dir, tokenizer, capsys, options):
    sample.main([f"--out_dir={checkpoint_dir}", "--start=", "--max_new_tokens=8", *options])
    assert capsys.readouterr().err == ""
    assert sample.encode_prompt("", tokenizer, 32)[1] == [tokenizer.eot_id]


@pytest.mark.parametrize("normalization, expected", [
    (None, "\u06cc\u06a9 \u06f1"),  # ي ك ١ become the Persian ی ک ۱, as in prepare.py by default
    ({"normalize_text": True, "remove_diacritics": True}, "\u06cc\u06a9 \u06f1"),
    ({"normalize_text": False, "remove_diacritics": True}, "\u064a\u0643 \u0661"),  # kept as written
])
def test_prompt_is_normalized_as_the_training_text_was(tokenizer, normalization, expected):
    text, ids = sample.encode_prompt("\u064a\u0643  \u0661", tokenizer, 32, normalization)
    assert text == expected
    assert ids == [tokenizer.eot_id] + tokenizer.encode(expected)


@pytest.mark.parametrize("bad", [["--temperature=0"], ["--top_p=0"], ["--top_p=1.5"], ["--beams=0"],
                                 ["--top_k=-1"], ["--beams=2", "--num_samples=2"], ["--start=FILE:nowhere.txt"]])
def test_bad_settings_are_usage_errors(checkpoint_dir, bad):
    with pytest.raises(sample.common.UsageError):
        sample.main([f"--out_dir={checkpoint_dir}", *bad])
