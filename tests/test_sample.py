import copy
import hashlib
import itertools
import os
import re
import subprocess
import sys

import pytest
import torch

import sample
from bpe import Tokenizer
from conftest import PERSIAN, ROOT
from model import GPT, GPTConfig, Int8Linear, KVCache, quantize_weights

@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(PERSIAN * 3, vocab_size=300)


def tiny_model(vocab_size, pos_emb="rope", n_layer=2, block_size=16, seed=0, scale=5):
    """A random model with sharp distributions, so greedy choices are far from ties."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=2,
                          n_embd=32, pos_emb=pos_emb)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


class MarkovModel(torch.nn.Module):
    """A stand-in for GPT whose next token depends only on the last one, with the distribution
    probs[last] (V x V). It leaves the KV cache it is given alone, so a Decoder runs it with
    or without one."""

    def __init__(self, probs, block_size=64):
        super().__init__()
        self.config = GPTConfig(block_size=block_size, vocab_size=probs.size(1), n_layer=1, n_head=1, n_embd=2)
        self.wte = torch.nn.Embedding(1, 1)  # a Decoder reads the device from it
        self.register_buffer("log_probs", probs.log())

    def new_kv_cache(self, batch_size):
        return KVCache(self.config, batch_size, torch.float32)

    def forward(self, idx, kv_cache=None, cache_row=0, head=True):
        return self.log_probs[idx], None


# -----------------------------------------------------------------------------
# decoding filters

def filtered(logits, temperature=1.0, top_k=0, top_p=1.0):
    """filter_logits' kept logits put back in place over the whole vocabulary, -inf elsewhere."""
    kept, ids = sample.filter_logits(logits, temperature, top_k, top_p)
    return torch.full_like(logits, float("-inf")).scatter(1, ids, kept)


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (50, 1.0), (1000, 1.0)])
def test_disabled_filters_leave_distribution_unchanged(top_k, top_p):
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(filtered(logits, 1.0, top_k, top_p), logits)
    kept, ids = sample.filter_logits(logits, 1.0, top_k, top_p)
    assert torch.equal(kept, logits) and torch.equal(ids, torch.arange(50).expand(3, 50))


def test_top_k_keeps_the_k_most_likely():
    logits = torch.tensor([[0.5, 3.0, -1.0, 2.0, 1.0]])
    kept = torch.isfinite(filtered(logits, top_k=3))
    assert kept.tolist() == [[False, True, False, True, True]]


@pytest.mark.parametrize("top_p, expected", [(0.4, [1, 0, 0, 0]), (0.7, [1, 1, 0, 0]),
                                             (0.9, [1, 1, 1, 0]), (0.99, [1, 1, 1, 1])])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    probs = torch.tensor([[0.05, 0.3, 0.5, 0.15]])
    kept = filtered(probs.log(), top_p=top_p)
    order = [2, 1, 3, 0]  # most likely first
    assert torch.isfinite(kept)[0, order].int().tolist() == expected
    kept = torch.softmax(kept, dim=-1)[0, order][:sum(expected)]
    assert torch.allclose(kept, probs[0, order][:sum(expected)] / probs[0, order][:sum(expected)].sum())


def test_top_p_applies_to_what_top_k_leaves():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # alone, top_p=0.6 keeps 0.5 and 0.3; after top_k=2 the two hold 0.625 and 0.375, so one is enough
    assert torch.isfinite(filtered(logits, top_p=0.6)).sum() == 2
    kept = torch.isfinite(filtered(logits, top_k=2, top_p=0.6))
    assert kept.tolist() == [[True, False, False, False]]


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, 2.0, 4.0]])
    assert torch.allclose(filtered(logits, temperature=0.5), logits * 2)


@pytest.mark.parametrize("top_k", [0, 3])
def test_top_p_applies_to_the_distribution_after_temperature(top_k):
    """At temperature 1 the two most likely tokens are needed to reach top_p 0.6 (0.5 + 0.3);
    at temperature 0.5 the probabilities become 0.69, 0.25, ... and the first reaches it alone."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.isfinite(filtered(logits, 1.0, top_k, 0.6)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filtered(logits, 0.5, top_k, 0.6)).tolist() == [[True, False, False, False]]
    model = MarkovModel(logits.exp().expand(4, 4))  # a Decoder row with these settings draws token 0 only
    decoder = sample.Decoder(model, 1)
    decoder.add([0], temperature=0.5, top_k=top_k, top_p=0.6, max_new_tokens=300,
                generator=torch.Generator().manual_seed(0))
    assert tokens_of(run_rows(decoder, {0: 0})[0]) == [0] * 300


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0, -0.5]])
    context = torch.tensor([[0, 1, 0]])  # token 0 twice, token 1 once
    before = torch.softmax(logits, dim=-1)
    after = torch.softmax(sample.apply_repetition_penalty(logits, context, 1.5), dim=-1)
    assert after[0, 0] < before[0, 0] and after[0, 1] < before[0, 1]
    assert (after[0, 2:] > before[0, 2:]).all()
    assert torch.equal(sample.apply_repetition_penalty(logits, context, 1.0), logits)


def test_sample_token_follows_the_distribution():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([sample.sample_token(probs, [generator, generator]) for _ in range(20000)], dim=1)
    frequencies = torch.stack([torch.bincount(row, minlength=5) for row in draws]) / 20000
    assert frequencies[0, [1, 4]].tolist() == [0, 0] and (draws[1] == 4).all()
    torch.testing.assert_close(frequencies, probs, atol=0.01, rtol=0)


def test_sample_token_never_draws_a_token_of_probability_zero():
    """Even when the cumulative sum rounds a filtered-out token's value above the one before it,
    as a GPU's parallel scan may (here by 0.1, to see it often): a draw landing on that sliver
    goes to the most likely token."""
    class RoundingScan(torch.Tensor):
        def cumsum(self, dim):
            probs = self.as_subclass(torch.Tensor)
            return probs.cumsum(dim) + 0.1 * (probs == 0).cumsum(dim)

    probs = torch.tensor([[0.3, 0.0, 0.7, 0.0]]).as_subclass(RoundingScan)
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([sample.sample_token(probs, [generator]).as_subclass(torch.Tensor) for _ in range(2000)], dim=1)
    counts = torch.bincount(draws[0], minlength=4).tolist()
    assert counts[1] == counts[3] == 0 and counts[0] > 400 and counts[2] > 1300


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
    # the prompt but its last token, then one token at a time; at 17 tokens of context it
    # restarts from the last 8: 7 refill the cache and the step reads the 8th
    assert lengths == [3] + [1] * 13 + [7] + [1] * 9 + [7] + [1] * 8


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


def test_beam_search_counts_a_stop_only_among_the_best_beams():
    """Token 0 has p=0.6 after the prompt and 0.9 after itself, the stop token 5 always 0.08:
    [0] * 8 scores (log 0.6 + 7 log 0.9) / 8 = -0.16, [0] then the stop (log 0.6 + log 0.08) / 2
    = -1.52. The stops rank below both live beams at every step, so none of them may end the
    search (counting every stop among the 2 x beams candidates returned [0])."""
    after_prompt, after_zero = [0.6, 0.1, 0.09, 0.07, 0.06, 0.08], [0.9, 0.01, 0.005, 0.003, 0.002, 0.08]
    model = MarkovModel(torch.tensor([after_zero] + [after_prompt] * 5))
    for use_cache in (True, False):
        assert sample.beam_search(model, [1], 2, 8, stop_ids=(5,), use_cache=use_cache) == [0] * 8


def test_beam_search_stops_when_no_live_beam_can_beat_the_hypotheses_kept():
    """The stop token 2 has p=0.9 everywhere. Step 1 keeps [] (the stop, -0.105); step 2 keeps
    [0] (-2.92 / 2); then the best live beam, [0, 0] at -5.63 / 2, cannot beat the worse of the
    two, and the search ends after two forward passes instead of running to max_new_tokens."""
    model = MarkovModel(torch.tensor([[0.06, 0.04, 0.9]] * 3))
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    assert sample.beam_search(model, [1], 2, 10, stop_ids=(2,)) == []
    assert len(calls) == 2


def best_by_exhaustive_search(model, prompt, max_new_tokens, stop, length_penalty):
    """Every continuation that ends at the stop token or at max_new_tokens, scored as beam
    search scores them (log-probability / length ** length_penalty, the stop counted): the best."""
    hypotheses = []
    for length in range(1, max_new_tokens + 1):
        for new in itertools.product(range(model.config.vocab_size), repeat=length):
            if stop in new[:-1] or (length < max_new_tokens and new[-1] != stop):
                continue
            ids = torch.tensor([prompt + list(new)])
            with torch.no_grad():
                log_probs = torch.log_softmax(model(ids[:, :-1])[0][0, len(prompt) - 1:].float(), dim=-1)
            score = log_probs.gather(1, ids[0, len(prompt):, None]).sum().item() / length ** length_penalty
            hypotheses.append((score, list(new[:-1]) if new[-1] == stop else list(new)))
    return max(hypotheses, key=lambda hypothesis: hypothesis[0])[1]


@pytest.mark.parametrize("kind", ["markov", "gpt"])
def test_beam_search_with_a_length_penalty_finds_the_exhaustive_best(kind):
    """Four tokens, 3 the stop, three new tokens at most: 36 beams see every continuation, so
    beam search must return what an exhaustive search finds, for each length penalty. On the
    Markov model the penalty decides between ending at once (the stop has p=0.4) and three
    tokens of p=0.5 each: a search that ignored length_penalty would return the same for
    both."""
    if kind == "markov":
        model = MarkovModel(torch.tensor([[0.5, 0.06, 0.04, 0.4]] * 4))
    else:
        model = tiny_model(4, scale=2)
    found = {}
    for length_penalty in (0.5, 1.0, 3.0):
        found[length_penalty] = sample.beam_search(model, [1, 2], 36, 3, length_penalty, stop_ids=(3,))
        assert found[length_penalty] == best_by_exhaustive_search(model, [1, 2], 3, 3, length_penalty)
    if kind == "markov":
        assert found[0.5] == [] and found[3.0] == [0, 0, 0]


# -----------------------------------------------------------------------------
# batched decoding: rows of one Decoder

# Eight prompts of different lengths; the longest passes block_size (16), and since the rows
# reach a full context at different steps, each restarts while the others go on.
PROMPTS = [[(7 * i + j) % 60 + 1 for j in range(length)] for i, length in enumerate([1, 2, 3, 5, 8, 11, 15, 20])]
SAMPLING = dict(temperature=0.9, top_k=30, top_p=0.95, repetition_penalty=1.1)


def run_rows(decoder, rows, steps=None):
    """Step until every row in `rows` ({row id: name}) has finished (or for `steps` steps);
    return {name: [(token id, logprob, top), ...]} of the tokens each row emitted."""
    out = {name: [] for name in rows.values()}
    for _ in range(steps) if steps is not None else iter(int, 1):
        if not any(row in rows for row in (row.id for row in decoder.rows)):
            break
        for row, token, logprob, top, finished in decoder.step():
            if row in rows and token is not None:
                out[rows[row]].append((token, logprob, top))
    return out


def alone(model, prompt, seed, max_new_tokens=40, **settings):
    decoder = sample.Decoder(model, 1)
    row = decoder.add(prompt, generator=torch.Generator().manual_seed(seed), max_new_tokens=max_new_tokens,
                      **settings)
    return run_rows(decoder, {row: 0})[0]


def tokens_of(emitted):
    return [token for token, _, _ in emitted]


@pytest.mark.parametrize("pos_emb,weights", [("rope", "fp32"), ("learned", "fp32"), ("rope", "int8")])
@pytest.mark.parametrize("settings", [dict(greedy=True), SAMPLING], ids=["greedy", "sampling"])
def test_each_row_of_a_batch_equals_its_prompt_run_alone(pos_emb, weights, settings):
    """Token for token, with each row's own seed, with fp32 or int8 weights (whose activations
    are not quantized, so no row's scale depends on the others). The batch computes row i's
    logits in other matrix shapes than a run alone, so they differ in the last bits (about 1e-5
    here); a sampled token could only change if its uniform draw fell within that of a boundary
    of the cumulative distribution, which these fixed seeds do not. The distributions
    themselves are compared with a tolerance below."""
    model = quantize_weights(tiny_model(64, pos_emb, n_layer=3), "none" if weights == "fp32" else "int8")
    decoder = sample.Decoder(model, len(PROMPTS))
    rows = {decoder.add(prompt, generator=torch.Generator().manual_seed(i), max_new_tokens=40,
                        top_logprobs=64, **settings): i for i, prompt in enumerate(PROMPTS)}
    batch = run_rows(decoder, rows)
    for i, prompt in enumerate(PROMPTS):
        single = alone(model, prompt, seed=i, top_logprobs=64, **settings)
        assert len(batch[i]) == 40 and tokens_of(batch[i]) == tokens_of(single)
        for (_, logprob_b, top_b), (_, logprob_a, top_a) in zip(batch[i], single):
            assert logprob_b == pytest.approx(logprob_a, abs=1e-4)
            full_b, full_a = (torch.tensor(sorted(top)) for top in (top_b, top_a))  # the whole vocabulary
            torch.testing.assert_close(full_b, full_a, atol=1e-4, rtol=0)
    assert len(decoder) == 0 and decoder.free_rows == len(PROMPTS)


MIXED = [dict(greedy=True), SAMPLING, dict(temperature=0.7, top_k=5, top_p=1.0), dict(SAMPLING, top_k=0),
         dict(temperature=0.7, top_k=5, top_p=1.0, repetition_penalty=1.3), dict(temperature=0), SAMPLING]


@pytest.mark.parametrize("order", [MIXED, MIXED[::-1]], ids=["forward", "reversed"])
def test_rows_with_different_settings_in_one_batch_equal_their_runs_alone(order):
    """The Decoder filters the rows that share settings as one batch and draws for each row
    from its own generator: mixing greedy rows, sampled rows of several settings and a
    repetition penalty in one batch changes no row's tokens."""
    model = tiny_model(64, n_layer=3)
    decoder = sample.Decoder(model, len(order))
    rows = {decoder.add(PROMPTS[i], generator=torch.Generator().manual_seed(i), max_new_tokens=30, **settings): i
            for i, settings in enumerate(order)}
    batch = run_rows(decoder, rows)
    for i, settings in enumerate(order):
        assert tokens_of(batch[i]) == tokens_of(alone(model, PROMPTS[i], i, 30, **settings))


def test_sample_token_draws_each_row_from_its_own_generator():
    probs = torch.softmax(torch.randn(3, 50, generator=torch.Generator().manual_seed(0)), dim=-1)
    together = sample.sample_token(probs, [torch.Generator().manual_seed(seed) for seed in (5, 6, 7)])
    apart = [sample.sample_token(probs[i, None], [torch.Generator().manual_seed(seed)])
             for i, seed in enumerate((5, 6, 7))]
    assert together.shape == (3, 1) and together.tolist() == torch.cat(apart).tolist()


def test_generate_batches_prompts_and_keeps_the_one_prompt_form():
    model = tiny_model(64, n_layer=3)
    generators = [torch.Generator().manual_seed(i) for i in range(len(PROMPTS))]
    batched = [[] for _ in PROMPTS]
    for i, token in sample.generate(model, PROMPTS, 25, generator=generators, **SAMPLING):
        batched[i].append(token)
    for i, prompt in enumerate(PROMPTS):
        single = sample.generate(model, prompt, 25, generator=torch.Generator().manual_seed(i), **SAMPLING)
        assert list(single) == batched[i] == tokens_of(alone(model, prompt, i, 25, **SAMPLING))


def test_a_row_added_later_equals_its_run_alone():
    model = tiny_model(64, n_layer=3)
    decoder = sample.Decoder(model, 4)
    early = {decoder.add(prompt, generator=torch.Generator().manual_seed(i), max_new_tokens=40, **SAMPLING): i
             for i, prompt in enumerate(PROMPTS[:3])}
    first = run_rows(decoder, early, steps=7)
    late = decoder.add(PROMPTS[6], generator=torch.Generator().manual_seed(6), max_new_tokens=30, **SAMPLING)
    rest = run_rows(decoder, {**early, late: 6})
    assert tokens_of(rest[6]) == tokens_of(alone(model, PROMPTS[6], 6, 30, **SAMPLING))
    for row, i in early.items():
        assert tokens_of(first[i] + rest[i]) == tokens_of(alone(model, PROMPTS[i], i, 40, **SAMPLING))


def test_remove_frees_a_row_and_leaves_the_others_alone():
    model = tiny_model(64, n_layer=3)
    decoder = sample.Decoder(model, 3)
    rows = {decoder.add(prompt, generator=torch.Generator().manual_seed(i), max_new_tokens=30, **SAMPLING): i
            for i, prompt in enumerate(PROMPTS[3:6])}
    assert sorted(rows) == [0, 1, 2] and decoder.free_rows == 0
    with pytest.raises(ValueError, match="in use"):
        decoder.add([1])
    first = run_rows(decoder, rows, steps=5)
    decoder.remove(0)  # the first row's cache row is refilled by the last one
    assert len(decoder) == 2 and decoder.free_rows == 1
    with pytest.raises(ValueError, match="no active row"):
        decoder.remove(0)
    assert decoder.add(PROMPTS[0], greedy=True, max_new_tokens=3) == 0  # the id is free again
    rest = run_rows(decoder, {**rows, 0: "new"})
    assert tokens_of(rest["new"]) == tokens_of(alone(model, PROMPTS[0], 0, 3, greedy=True))
    for i in (1, 2):
        assert tokens_of(first[i] + rest[i]) == tokens_of(alone(model, PROMPTS[3 + i], i, 30, **SAMPLING))


def test_temperature_zero_is_greedy():
    model = tiny_model(64)
    greedy = tokens_of(alone(model, [1, 2, 3], 0, greedy=True))
    assert tokens_of(alone(model, [1, 2, 3], 5, temperature=0.0, top_k=3, top_p=0.5)) == greedy
    assert list(sample.generate(model, [1, 2, 3], 40, temperature=0)) == greedy


def test_stop_ids_and_max_new_tokens_end_a_row():
    model = tiny_model(64)
    free = tokens_of(alone(model, [1, 2], 0, greedy=True))
    stop = next(token for token in free if free.index(token) >= 4)  # first seen after a few tokens
    decoder = sample.Decoder(model, 2)
    stopped = decoder.add([1, 2], greedy=True, stop_ids=(stop,), max_new_tokens=40)
    short = decoder.add([1, 2], greedy=True, max_new_tokens=3)
    events = []
    while len(decoder):
        events += decoder.step()
    by_row = {row: [event[1:] for event in events if event[0] == row] for row in (stopped, short)}
    # the stop token is reported as None, with its log-probability, and ends the row
    assert [token for token, *_ in by_row[stopped]] == free[:free.index(stop)] + [None]
    assert by_row[stopped][-1][1] < 0 and [finished for *_, finished in by_row[stopped]][-2:] == [False, True]
    assert [token for token, *_ in by_row[short]] == free[:3]
    assert [finished for *_, finished in by_row[short]] == [False, False, True]
    assert decoder.step() == [] and decoder.free_rows == 2


def test_logprob_and_top_are_the_raw_distribution():
    """Penalty, temperature and filters change what is sampled, not the reported log-probabilities."""
    model = tiny_model(64)
    emitted = alone(model, [4, 5, 6], 3, max_new_tokens=5, top_logprobs=3, temperature=1.7, top_k=20,
                    repetition_penalty=1.5, frequency_penalty=1.0, presence_penalty=-0.5, logit_bias={9: 3.0})
    context = [4, 5, 6]
    for token, logprob, top in emitted:
        with torch.no_grad():
            expected = torch.log_softmax(model(torch.tensor([context]))[0][0, -1], dim=-1)
        assert logprob == pytest.approx(expected[token].item(), abs=1e-4)
        values, ids = expected.topk(3)
        assert [token for token, _ in top] == ids.tolist()
        assert [value for _, value in top] == pytest.approx(values.tolist(), abs=1e-4)
        context.append(token)


def test_penalties_and_logit_bias_apply_in_order():
    """A row's logits: the repetition penalty over its context, then OpenAI's frequency and
    presence penalties over the tokens it has generated (not its prompt), then logit_bias."""
    decoder = sample.Decoder(MarkovModel(torch.full((5, 5), 0.2)), 1)
    decoder.add([0, 4], repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25,
                logit_bias={3: 1.5, 0: -0.5})
    row = decoder.rows[0]
    row.tokens += [1, 1, 2]  # generated so far: token 1 twice, token 2 once
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0, 3.0]])
    # 0: 2 / 2 - 0.5; 1: -1 * 2 - 2 * 0.5 - 0.25; 2: 0.5 / 2 - 0.5 - 0.25; 3: 1 + 1.5; 4: 3 / 2
    assert row.penalize(logits).tolist() == [[0.5, -3.25, -0.5, 2.5, 1.5]]


def test_frequency_and_presence_penalties_are_openais():
    """Greedy decoding with the penalties equals a loop written from OpenAI's definition:
    logits[j] -= count_j * frequency_penalty + (count_j > 0) * presence_penalty, over the tokens
    generated so far; and they change the text."""
    model, prompt = tiny_model(64), [4, 5, 6]
    context, counts = list(prompt), torch.zeros(64)
    for _ in range(10):
        with torch.no_grad():
            logits = model(torch.tensor([context]))[0][0, -1]
        token = (logits - counts * 0.7 - (counts > 0) * 0.4).argmax().item()
        counts[token] += 1
        context.append(token)
    penalized = tokens_of(alone(model, prompt, 0, 10, greedy=True, frequency_penalty=0.7, presence_penalty=0.4))
    assert penalized == context[3:] != tokens_of(alone(model, prompt, 0, 10, greedy=True))
    assert list(sample.generate(model, prompt, 10, greedy=True, frequency_penalty=0.7, presence_penalty=0.4)) == penalized


def test_logit_bias_forces_and_bans_tokens():
    model = tiny_model(64)
    assert tokens_of(alone(model, [1, 2, 3], 0, 12, logit_bias={7: 100}, **SAMPLING)) == [7] * 12
    free = tokens_of(alone(model, [1, 2, 3], 0, 12, greedy=True))
    banned = tokens_of(alone(model, [1, 2, 3], 0, 12, greedy=True, logit_bias={free[0]: -100, free[1]: -100}))
    assert banned[0] != free[0] and not {free[0], free[1]} & set(banned)


@pytest.mark.parametrize("top_n", [0, 1, 4])
def test_score_prompt_gives_each_token_its_log_prob_after_the_ones_before(top_n):
    model, prompt = tiny_model(64), [4, 5, 6, 7, 4, 9]
    scores = sample.score_prompt(model, prompt, top_n)
    assert len(scores) == len(prompt) - 1 and sample.score_prompt(model, prompt[:1], top_n) == []
    for end, (logprob, top) in enumerate(scores, start=1):
        with torch.no_grad():
            expected = torch.log_softmax(model(torch.tensor([prompt[:end]]))[0][0, -1], dim=-1)
        assert logprob == pytest.approx(expected[prompt[end]].item(), abs=1e-4)
        values, ids = expected.topk(top_n)
        assert [token for token, _ in top] == ids.tolist()
        assert [value for _, value in top] == pytest.approx(values.tolist(), abs=1e-4)


@pytest.mark.parametrize("bad, message", [
    (dict(prompt_ids=[]), "at least one prompt token"), (dict(temperature=-1), "temperature must be >= 0"),
    (dict(top_p=0), "top_p must be in"), (dict(top_k=-2), "top_k must be >= 0"),
    (dict(repetition_penalty=0), "repetition_penalty > 0"), (dict(max_new_tokens=0), "max_new_tokens >= 1"),
    (dict(top_logprobs=-1), "top_logprobs >= 0"), (dict(frequency_penalty=2.5), "must be in \\[-2, 2\\]"),
    (dict(presence_penalty=-2.1), "must be in \\[-2, 2\\]"), (dict(logit_bias={5: 100.5}), "in \\[-100, 100\\]"),
    (dict(logit_bias={64: 1}), "token 64"), (dict(logit_bias={-1: 1}), "token -1"),
    (dict(logit_bias={"5": 1}), "token '5'")])
def test_decoder_refuses_bad_rows(bad, message):
    decoder = sample.Decoder(tiny_model(64), 2)
    with pytest.raises(ValueError, match=message):
        decoder.add(**{"prompt_ids": [1], **bad})
    assert len(decoder) == 0


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


def test_read_token_gives_a_character_to_the_token_that_completes_it():
    """Byte tokens: the first byte of a Persian letter reads as "", the second as the letter;
    each alternative reads as if it came in the chosen token's place."""
    bytes_only = Tokenizer([])
    first, second = "س".encode()  # two bytes: 0xd8 0xb3
    decoder = sample.utf8_decoder()
    assert sample.read_token(bytes_only, decoder, ord("a"), -0.5, [(ord("b"), -1.0)]) == \
        ["a", -0.5, {"a": -0.5, "b": -1.0}]
    started = sample.read_token(bytes_only, decoder, first, -0.1, [(first, -0.1), (ord("x"), -3.0)])
    assert started == ["", -0.1, {"": -0.1, "x": -3.0}]  # the same piece twice keeps the first entry
    shin = "ش".encode()[1]
    completed = sample.read_token(bytes_only, decoder, second, -0.2, [(shin, -2.0)])
    assert completed == ["س", -0.2, {"س": -0.2, "ش": -2.0}]
    assert sample.read_token(bytes_only, decoder, ord("b")) == ["b", None, None]


def test_read_token_reads_endoftext_as_no_text():
    """<|endoftext|> reads as "", chosen or an alternative, and the character it comes inside goes
    on after it; read as the last token (final), a character left unfinished becomes U+FFFD."""
    bytes_only, decoder = Tokenizer([]), sample.utf8_decoder()
    first, second = "س".encode()
    eot = bytes_only.eot_id
    assert sample.read_token(bytes_only, decoder, first) == ["", None, None]
    assert sample.read_token(bytes_only, decoder, eot, -0.1, [(ord("x"), -3.0), (eot, -0.1)]) == \
        ["", -0.1, {"": -0.1, "\ufffdx": -3.0}]
    assert sample.read_token(bytes_only, decoder, second, -0.2, [(eot, -1.0)]) == ["س", -0.2, {"س": -0.2, "": -1.0}]
    sample.read_token(bytes_only, decoder, first)
    assert sample.read_token(bytes_only, decoder, eot, -0.3, [(second, -2.0)], final=True) == \
        ["\ufffd", -0.3, {"\ufffd": -0.3, "س": -2.0}]


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


SPEED_LINE = r"(\d+) tokens in [\d.]+ s \([\d.]+ tokens/s\)\n"  # sample.py's last line, on stderr


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


@pytest.mark.parametrize("options", [["--greedy=True"], ["--beams=3"], ["--use_cache=False"],
                                     ["--beams=2", "--use_cache=False"], ["--frequency_penalty=1.5", "--presence_penalty=-1"]])
def test_every_decoding_mode_runs_from_an_empty_prompt(checkpoint_dir, tokenizer, capsys, options):
    sample.main([f"--out_dir={checkpoint_dir}", "--start=", "--max_new_tokens=8", *options])
    assert re.fullmatch(SPEED_LINE, capsys.readouterr().err)
    assert sample.encode_prompt("", tokenizer, 32)[1] == [tokenizer.eot_id]  # which is a document's start


@pytest.mark.parametrize("normalization, expected", [
    (None, "\u064a\u0643  \u0661"),  # a tokenizer without normalization reads the text as it is
    ({"normalize_text": True, "remove_diacritics": True}, "\u06cc\u06a9 \u06f1"),  # ي ك ١ -> ی ک ۱
    ({"normalize_text": False, "remove_diacritics": True}, "\u064a\u0643 \u0661"),  # only spaces tidied
])
def test_prompt_is_normalized_as_the_training_text_was(tokenizer, normalization, expected):
    tokenizer = Tokenizer.from_json(tokenizer.to_json())
    tokenizer.normalization = normalization
    text, ids = sample.encode_prompt("\u064a\u0643  \u0661", tokenizer, 32)
    assert text == expected
    assert ids == [tokenizer.eot_id] + Tokenizer(tokenizer.merges).encode(expected)


@pytest.mark.parametrize("bad, message", [
    (["--temperature=-0.5"], "temperature must be >= 0"), (["--top_p=0"], "top_p must be in"),
    (["--top_p=1.5"], "top_p must be in"), (["--beams=0"], "at least 1"), (["--top_k=-1"], "top_k must be >= 0"),
    (["--beams=2", "--num_samples=2"], "every sample would be the same"),
    (["--beams=2", "--repetition_penalty=1.2"], "beam search applies no penalties"),
    (["--start=FILE:nowhere.txt"], "cannot read prompt file nowhere.txt"), (["--quantize=int4"], "quantize must be"),
    (["--frequency_penalty=3"], "frequency_penalty and presence_penalty must be in"),
    (["--presence_penalty=-2.5"], "frequency_penalty and presence_penalty must be in")])
def test_bad_settings_are_usage_errors(checkpoint_dir, bad, message):
    with pytest.raises(sample.common.UsageError, match=message):
        sample.main([f"--out_dir={checkpoint_dir}", *bad])


@pytest.mark.parametrize("device, gpus_available, message", [
    ("cuda", False, "device is cuda but no CUDA GPU is available"),
    ("cuda:99", True, "device 'cuda:99' cannot be used: "),  # no such GPU, or a torch built without CUDA
    ("mps", False, "device is mps but no Apple GPU is available"),
    ("gpu", False, "unknown device 'gpu'"),
])
def test_unusable_devices_are_one_line_usage_errors(checkpoint_dir, monkeypatch, device, gpus_available, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus_available)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: gpus_available)
    with pytest.raises(sample.common.UsageError) as error:
        sample.main([f"--out_dir={checkpoint_dir}", f"--device={device}"])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unusable_gpu_is_a_one_line_error_on_the_command_line(checkpoint_dir):
    # with GPUs, an index past the last; without, no GPU at all (each branch: the test above)
    result = run_sample(f"--out_dir={checkpoint_dir}", "--device=cuda:7")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: device ") and len(result.stderr.strip().splitlines()) == 1


def samples_of(stdout):
    return stdout.rstrip("\n").split("\n" + "-" * 40 + "\n")


def test_num_samples_are_one_batch_with_a_seed_per_sample(checkpoint_dir, capsys):
    """Sample i draws from seed + i, so it is the text that --seed=seed+i writes alone."""
    common = [f"--out_dir={checkpoint_dir}", "--start=زبان فارسی", "--max_new_tokens=20"]
    sample.main(common + ["--num_samples=3", "--seed=5"])
    out = capsys.readouterr()
    batch = samples_of(out.out)
    assert len(batch) == 3 and len(set(batch)) == 3
    tokens = int(re.fullmatch(SPEED_LINE, out.err).group(1))
    assert 3 <= tokens <= 60
    for i in range(3):
        sample.main(common + [f"--seed={5 + i}"])
        assert samples_of(capsys.readouterr().out) == [batch[i]]


def test_temperature_zero_on_the_command_line_is_greedy(checkpoint_dir, capsys):
    outputs = []
    for options in (["--temperature=0", "--seed=1"], ["--greedy=True", "--seed=2"]):
        sample.main([f"--out_dir={checkpoint_dir}", "--start=تهران", "--max_new_tokens=15", *options])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


# -----------------------------------------------------------------------------
# int8 and bf16 weights

def test_int8_quantizes_every_linear_but_keeps_the_embedding():
    model = quantize_weights(tiny_model(64), "int8")
    assert not any(isinstance(module, torch.nn.Linear) for module in model.modules())
    assert isinstance(model.lm_head, Int8Linear)
    assert model.lm_head.weight.dtype == torch.int8 and model.wte.weight.dtype == torch.float32
    assert quantize_weights(model, "none") is model


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
def test_int8_logits_stay_close_to_fp32(pos_emb):
    """On a test model with logits of standard deviation about 1, int8 logits are within 8% of
    fp32 (relative error of the whole tensor), the same alone or in a batch (only weights are
    quantized, so a row does not depend on its neighbours), and along fp32's greedy text int8
    picks the same next token at least 80% of the time."""
    fp32 = tiny_model(64, pos_emb, n_layer=3, scale=3)
    int8 = quantize_weights(copy.deepcopy(fp32), "int8")
    idx = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    greedy = torch.tensor([[1, 2, 3] + list(sample.generate(fp32, [1, 2, 3], 13, greedy=True))])
    with torch.no_grad():
        exact, batched = fp32(idx)[0], int8(idx)[0]
        alone = torch.cat([int8(idx[i:i + 1])[0] for i in range(8)])
        int8_choices = int8(greedy)[0][0, 2:-1].argmax(-1)
    assert not torch.equal(exact, batched)
    torch.testing.assert_close(batched, alone)
    for approx in (batched, alone):
        assert (approx - exact).norm() / exact.norm() < 0.08
        assert (approx.argmax(-1) == exact.argmax(-1)).float().mean() >= 0.85
    assert (int8_choices == greedy[0, 3:]).float().mean() >= 0.8


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
def test_bf16_weights_and_cache_with_fp32_rotary_angles(pos_emb):
    """bf16 turns every weight and the KV cache to bf16 but keeps the rotary frequencies exact;
    its logits stay within 3% of fp32's, its greedy choices match fp32's at least 85% of the
    time, and a Decoder runs it with rows of different lengths."""
    fp32 = tiny_model(64, pos_emb, n_layer=3, scale=3)
    bf16 = quantize_weights(copy.deepcopy(fp32), "bf16")
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    if pos_emb == "rope":
        assert bf16.inv_freq.dtype == torch.float32 and torch.equal(bf16.inv_freq, fp32.inv_freq)
    idx = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact, approx = fp32(idx)[0], bf16(idx)[0].float()
    assert (approx - exact).norm() / exact.norm() < 0.03
    assert (approx.argmax(-1) == exact.argmax(-1)).float().mean() >= 0.85
    decoder = sample.Decoder(bf16, max_rows=2)
    for prompt in ([1, 2, 3], [4, 5, 6, 7, 8, 9]):
        decoder.add(prompt, greedy=True, max_new_tokens=20)
    tokens = [token for _ in range(20) for _, token, *_ in decoder.step()]
    assert len(tokens) == 40 and all(token is not None and 0 <= token < 64 for token in tokens)
    assert all(buffer.dtype == torch.bfloat16 for buffer in decoder.cache.k + decoder.cache.v)


@pytest.mark.parametrize("scheme", ["int8", "bf16"])
def test_quantize_refuses_other_devices_and_schemes(scheme):
    with pytest.raises(sample.common.UsageError, match="CPU only"):
        quantize_weights(tiny_model(64).to("meta"), scheme)
    with pytest.raises(sample.common.UsageError, match="quantize must be"):
        quantize_weights(tiny_model(64), "fp8")


@pytest.mark.parametrize("scheme", ["int8", "bf16"])
def test_quantized_on_the_command_line(checkpoint_dir, scheme):
    result = run_sample(f"--out_dir={checkpoint_dir}", "--start=زبان فارسی", "--max_new_tokens=10",
                        f"--quantize={scheme}", "--device=cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("زبان فارسی") and re.fullmatch(SPEED_LINE, result.stderr)


# -----------------------------------------------------------------------------
# generate_text

def test_generate_text_returns_the_continuation(tokenizer):
    model = tiny_model(tokenizer.vocab_size, "learned", block_size=32)
    text = sample.generate_text("زبان فارسی", max_new_tokens=12, seed=3, model=model, tokenizer=tokenizer)
    _, prompt_ids = sample.encode_prompt("زبان فارسی", tokenizer, 32)
    new_ids = sample.generate(model, prompt_ids, 12, 0.8, 200, 0.95, generator=torch.Generator().manual_seed(3),
                              stop_ids=(tokenizer.eot_id,))
    assert text and text == tokenizer.decode(list(new_ids))
    again = sample.generate_text("زبان فارسی", max_new_tokens=12, seed=3, model=model, tokenizer=tokenizer)
    assert again == text
    with pytest.raises(ValueError, match="tokenizer"):
        sample.generate_text("زبان", model=model)


def test_generate_text_loads_a_checkpoint_once(checkpoint_dir, monkeypatch):
    loads = []
    load_checkpoint = sample.load_checkpoint
    monkeypatch.setattr(sample, "load_checkpoint", lambda *args: loads.append(args) or load_checkpoint(*args))
    monkeypatch.setattr(sample, "loaded_checkpoints", {})
    texts = [sample.generate_text("تهران", max_new_tokens=10, seed=1, out_dir=str(checkpoint_dir))
             for _ in range(3)]
    assert len(loads) == 1 and texts[0] == texts[1] == texts[2] and texts[0]
    ckpt = checkpoint_dir / "ckpt.pt"
    os.utime(ckpt, ns=(ckpt.stat().st_mtime_ns + 10**9,) * 2)  # a newer checkpoint is read again
    assert sample.generate_text("تهران", max_new_tokens=10, seed=1, out_dir=str(checkpoint_dir)) == texts[0]
    assert len(loads) == 2
    for _ in range(2):  # out_dir may name the ckpt.pt itself, read again as well once it changes
        os.utime(ckpt, ns=(ckpt.stat().st_mtime_ns + 10**9,) * 2)
        sample.generate_text("تهران", max_new_tokens=10, seed=1, out_dir=str(ckpt))
    assert len(loads) == 4
    with pytest.raises(sample.common.UsageError, match="no checkpoint"):
        sample.generate_text("تهران", out_dir=str(checkpoint_dir / "missing"))
