"""
Generate Persian text from a trained checkpoint, streaming it to the terminal.

    python sample.py --out_dir=out-fawiki-small --start="ایران کشوری است"
    python sample.py --out_dir=out-fawiki-small --start=FILE:prompt.txt --num_samples=3
    python sample.py --out_dir=out-fawiki-small --start="تهران" --beams=4 --max_new_tokens=40

Decoding: sampling with temperature, top-k, nucleus (top-p) and a repetition penalty, greedy
decoding, or beam search with a length penalty. Generation goes through the model's KV cache:
the prompt is read once, then every new token runs the model on a single position. When the
context is full it restarts from its last half (see next_token_logits), so generation can go
on for any number of tokens, with exactly the output that re-reading the context would give.
"""

import codecs
import os
import sys

import torch

import common

DEFAULTS = dict(
    out_dir="out-fawiki-small",  # folder holding ckpt.pt
    start="",  # prompt text, or FILE:path to read it from a UTF-8 file; empty = a fresh document
    num_samples=1,  # how many independent continuations to print
    max_new_tokens=200,  # tokens to generate per sample (fewer if the model ends the document)
    temperature=0.8,  # < 1 sharpens the distribution, > 1 flattens it
    top_k=200,  # sample only among the k most likely tokens; 0 = no limit
    top_p=0.95,  # sample only from the smallest set of tokens holding this much probability; 1 = off
    repetition_penalty=1.0,  # > 1 makes tokens already in the context less likely; 1 = off
    seed=1337,  # same seed, same settings, same checkpoint -> same text
    greedy=False,  # always take the most likely token (ignores temperature, top_k, top_p)
    beams=1,  # > 1 switches to beam search with this many beams
    length_penalty=1.0,  # beam search: > 1 favours longer continuations, < 1 shorter ones
    device="auto",  # cpu, cuda, cuda:1, mps ... or auto (CUDA when available)
    use_cache=True,  # False re-reads the whole context for every token (slow; for comparison)
)


# -----------------------------------------------------------------------------
# decoding filters: each takes and returns logits of shape (B, V)

def apply_repetition_penalty(logits, context, penalty):
    """Make every token present in `context` (B, T) less likely, as in CTRL (Keskar et al., 2019).

    Dividing a positive logit and multiplying a negative one both lower the token's probability,
    whatever the sign; a token repeated many times is penalised once, like one seen once."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(1, context)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)


def filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Scale by temperature, then set the logits of tokens that may not be sampled to -inf:
    all but the top_k most likely, then all outside the smallest set holding top_p of the
    probability that is left (the nucleus; the most likely token always stays)."""
    logits = logits / temperature
    vocab_size = logits.size(-1)
    k = top_k if 0 < top_k < vocab_size else vocab_size
    if k == vocab_size and top_p >= 1.0:
        return logits
    best, best_ids = torch.topk(logits, k, dim=-1)  # sorted, most likely first
    if top_p < 1.0:
        probs = torch.softmax(best, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        best = best.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, best_ids, best)


# -----------------------------------------------------------------------------
# running the model one step at a time

def next_token_logits(model, rows, start, cache):
    """Logits (B, V) for the token that follows each row of `rows` (B, T: every token so far).

    The model reads the context rows[:, start:]. When that would pass block_size, the context
    restarts from the last block_size // 2 tokens, a fresh window like those the model was
    trained on, and the cache is refilled in one pass over them: about one extra position per
    generated token. (Sliding the cache by one token instead would not be exact: in a model of
    two or more layers, the keys left in the cache were computed while the dropped tokens were
    still in view, which no fresh window can reproduce.) With a cache the model reads only the
    context tokens it does not hold yet; without one, the whole context every time. Both give
    the same logits. Returns (logits, start, cache)."""
    block_size = model.config.block_size
    if rows.size(1) - start > block_size:
        start = rows.size(1) - max(1, block_size // 2)
        cache = model.new_kv_cache(rows.size(0)) if cache is not None else None
    context = rows[:, start:]
    logits, _ = model(context if cache is None else context[:, len(cache):], kv_cache=cache)
    return logits[:, -1, :], start, cache


@torch.no_grad()
def generate(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             repetition_penalty=1.0, greedy=False, use_cache=True, generator=None, stop_ids=()):
    """Yield new token ids one at a time. A token in stop_ids ends generation and is not yielded.

    The model reads at most the last block_size tokens of the prompt, then its context moves
    on as described in next_token_logits."""
    if len(prompt_ids) == 0:
        raise ValueError("generate needs at least one prompt token (use the end-of-text id)")
    device = next(model.parameters()).device
    rows = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    start = max(0, rows.size(1) - model.config.block_size)
    cache = model.new_kv_cache(1) if use_cache else None
    for _ in range(max_new_tokens):
        logits, start, cache = next_token_logits(model, rows, start, cache)
        logits = apply_repetition_penalty(logits.float(), rows[:, start:], repetition_penalty)
        if greedy:
            token = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
        token_id = token.item()
        if token_id in stop_ids:
            return
        yield token_id
        rows = torch.cat([rows, token], dim=1)


@torch.no_grad()
def beam_search(model, prompt_ids, beams, max_new_tokens, length_penalty=1.0, stop_ids=()):
    """Return the new token ids of the best of `beams` hypotheses, ranked by
    log-probability / (number of new tokens) ** length_penalty.

    Every beam is one row of a batch sharing a KV cache; cache.reorder gives each surviving
    beam its parent's cache entries (at the first step, copies of the prompt's). A hypothesis
    ends at a stop token (counted in its length) or after max_new_tokens; the search ends as
    soon as `beams` hypotheses have ended."""
    if len(prompt_ids) == 0:
        raise ValueError("beam_search needs at least one prompt token (use the end-of-text id)")
    device = next(model.parameters()).device
    rows = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # one beam to begin with
    scores = torch.zeros(1, device=device)  # log-probability of each live beam's new tokens
    start = max(0, rows.size(1) - model.config.block_size)
    cache = model.new_kv_cache(1)
    finished = []  # (normalised score, new token ids)
    for step in range(1, max_new_tokens + 1):
        logits, start, cache = next_token_logits(model, rows, start, cache)
        vocab_size = logits.size(-1)
        candidates = (scores[:, None] + torch.log_softmax(logits.float(), dim=-1)).view(-1)
        # twice as many as there are beams: enough stay alive even if half of them stop here
        top_scores, top_flat = torch.topk(candidates, min(2 * beams, candidates.numel()))
        parents, tokens, alive_scores = [], [], []
        for score, flat in zip(top_scores.tolist(), top_flat.tolist()):
            parent, token = divmod(flat, vocab_size)
            if token in stop_ids:
                new_ids = rows[parent, len(prompt_ids):].tolist()
                finished.append((score / step ** length_penalty, new_ids))
            elif len(parents) < beams:
                parents.append(parent)
                tokens.append(token)
                alive_scores.append(score)
        if len(finished) >= beams or not parents:
            break
        parent_index = torch.tensor(parents, device=device)
        rows = torch.cat([rows[parent_index], torch.tensor(tokens, device=device)[:, None]], dim=1)
        scores = torch.tensor(alive_scores, device=device)
        cache.reorder(parent_index)
    else:  # out of tokens: the live beams end here too
        finished += [(score / max(max_new_tokens, 1) ** length_penalty, row[len(prompt_ids):].tolist())
                     for score, row in zip(scores.tolist(), rows)]
    return max(finished, key=lambda hypothesis: hypothesis[0])[1]


# -----------------------------------------------------------------------------
# text in and out

def stream_text(tokenizer, token_ids):
    """Yield the text of a stream of token ids piece by piece, never splitting a UTF-8 character.

    A BPE token may end in the middle of a multi-byte character (every Persian letter is two
    bytes), so bytes are held back until the character they start is complete."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token_id in token_ids:
        piece = decoder.decode(tokenizer.decode_bytes([token_id]))
        if piece:
            yield piece
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def read_prompt(start):
    """The prompt text: `start` itself, or the contents of the file named after FILE:."""
    if not start.startswith("FILE:"):
        return start
    path = start[len("FILE:"):]
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise common.UsageError(f"cannot read prompt file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise common.UsageError(f"prompt file {path} is not UTF-8 text") from e


def encode_prompt(text, tokenizer, block_size, normalization=None):
    """(normalised text, ids): a document start, <|endoftext|> then the text, cropped to the context.

    The text is normalised as the training text was (normalization: prepare.py's options, kept
    in the checkpoint), so Arabic yeh/kaf, digits and spacing reach the model in the form it learned."""
    from prepare import prepare_text  # imported here so the decoding functions need only torch
    text = prepare_text(text, **(normalization or {}))
    ids = [tokenizer.eot_id] + tokenizer.encode(text)
    if len(ids) > block_size:
        print(f"note: the prompt is {len(ids)} tokens but the model reads {block_size}; "
              f"keeping the last {block_size}", file=sys.stderr)
        ids = ids[-block_size:]
    return text, ids


def check_settings(config):
    """Refuse decoding settings that have no meaning, before any work is done."""
    if config["temperature"] <= 0 and not config["greedy"]:
        raise common.UsageError("temperature must be > 0 (use --greedy=True for the most likely token)")
    if not 0 < config["top_p"] <= 1:
        raise common.UsageError(f"top_p must be in (0, 1], got {config['top_p']}")
    if config["top_k"] < 0 or config["repetition_penalty"] <= 0:
        raise common.UsageError("top_k must be >= 0 and repetition_penalty > 0")


def main(argv=None):
    config, positional = common.configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if positional:
        raise common.UsageError(f"unexpected argument {positional[0]!r} (use --key=value)")
    check_settings(config)
    if config["beams"] < 1 or config["num_samples"] < 1:
        raise common.UsageError("beams and num_samples must be at least 1")
    if config["beams"] > 1 and config["num_samples"] > 1:
        raise common.UsageError("beam search has no randomness: every sample would be the same "
                                "(use num_samples=1)")
    from model import load_checkpoint
    from train import resolve_device
    ckpt_path = os.path.join(config["out_dir"], "ckpt.pt")
    if not os.path.isfile(ckpt_path):
        raise common.UsageError(f"no checkpoint at {ckpt_path} (train one with train.py, or set --out_dir)")
    device = resolve_device(config["device"], None)
    model, tokenizer, ckpt = load_checkpoint(ckpt_path, device)
    prompt_text, prompt_ids = encode_prompt(read_prompt(config["start"]), tokenizer,
                                            model.config.block_size, ckpt.get("normalization"))
    generator = torch.Generator(device=device).manual_seed(config["seed"])
    sys.stdout.reconfigure(encoding="utf-8")  # Persian text even where the console says otherwise
    for i in range(config["num_samples"]):
        if config["beams"] > 1:
            new_ids = beam_search(model, prompt_ids, config["beams"], config["max_new_tokens"],
                                  config["length_penalty"], stop_ids=(tokenizer.eot_id,))
        else:
            new_ids = generate(model, prompt_ids, config["max_new_tokens"], config["temperature"],
                               config["top_k"], config["top_p"], config["repetition_penalty"],
                               config["greedy"], config["use_cache"], generator,
                               stop_ids=(tokenizer.eot_id,))
        print(prompt_text, end="", flush=True)
        for piece in stream_text(tokenizer, new_ids):
            print(piece, end="", flush=True)
        print("\n" + "-" * 40 if i + 1 < config["num_samples"] else "")


if __name__ == "__main__":
    common.run(main)
