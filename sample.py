"""
Generate Persian text from a trained checkpoint, streaming it to the terminal.

    python sample.py --out_dir=out-fawiki-small --start="ایران کشوری است"
    python sample.py --out_dir=out-fawiki-small --start=FILE:prompt.txt --num_samples=3
    python sample.py --out_dir=out-fawiki-small --start="تهران" --beams=4 --max_new_tokens=40
    python sample.py --out_dir=out-fawiki-small --quantize=int8     # int8 weights, faster on a CPU

or from Python, the continuation alone:

    from sample import generate_text
    text = generate_text("ایران کشوری است", max_new_tokens=50, seed=1, out_dir="out-fawiki-small")

Decoding: sampling with temperature, top-k, nucleus (top-p), a repetition penalty and OpenAI's
frequency and presence penalties, greedy decoding (or temperature 0), or beam search with a
length penalty. All of it runs on one Decoder: rows of generation that share the model's KV
cache, one forward pass per step for all of them, each row with its own prompt, settings and
random generator (--num_samples=N is one batch of N rows; beam search keeps its beams as
rows). The prompt is read once, then every new token runs the model on a single position.
When the context is full it restarts from its last half (see restart_point), so generation
can go on for any number of tokens, with exactly the output that re-reading the context
would give. The last line, on stderr, is the speed: new tokens over all samples, seconds,
tokens per second.
"""

import codecs
import collections
import os
import sys
import time
from dataclasses import dataclass, replace

import torch

import common
from model import autocast_for, checkpoint_path, load_checkpoint, quantize_weights, resolve_device

DEFAULTS = dict(
    out_dir="out-fawiki-small",  # folder holding ckpt.pt
    start="",  # prompt text, or FILE:path to read it from a UTF-8 file; empty = a fresh document
    num_samples=1,  # how many independent continuations to print
    max_new_tokens=200,  # tokens to generate per sample (fewer if the model ends the document)
    temperature=0.8,  # < 1 sharpens the distribution, > 1 flattens it
    top_k=200,  # sample only among the k most likely tokens; 0 = no limit
    top_p=0.95,  # sample only from the smallest set of tokens holding this much probability; 1 = off
    repetition_penalty=1.0,  # > 1 makes tokens already in the context less likely; 1 = off
    frequency_penalty=0.0,  # -2..2: a token's logit loses this for every time the sample has generated it
    presence_penalty=0.0,  # -2..2: a token's logit loses this once if the sample has generated it
    seed=1337,  # same seed, same settings, same checkpoint -> same text; sample i draws from seed + i
    greedy=False,  # always take the most likely token (as does temperature 0; ignores top_k, top_p)
    beams=1,  # > 1 switches to beam search with this many beams (deterministic: no temperature, top-k or top-p)
    length_penalty=1.0,  # beam search: > 1 favours longer continuations, < 1 shorter ones
    device="auto",  # cpu, cuda, cuda:1, mps ... or auto (CUDA when available)
    use_cache=True,  # False re-reads the whole context for every token (slow; for comparison)
    quantize="none",  # CPU only: "int8" reads a quarter of the bytes per token (compiled at start), "bf16" half
)
SETTINGS = ("temperature", "top_k", "top_p", "repetition_penalty", "frequency_penalty", "presence_penalty")


# -----------------------------------------------------------------------------
# decoding filters on logits (B, V), and the draw

def apply_repetition_penalty(logits, context, penalty):
    """Make every token present in `context` (B, T) less likely, as in CTRL (Keskar et al., 2019).

    Dividing a positive logit and multiplying a negative one both lower the token's probability,
    whatever the sign; a token repeated many times is penalised once, like one seen once."""
    seen = logits.gather(1, context)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)


def filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
    """The tokens that may be sampled, after scaling the logits by temperature: the top_k most
    likely, then of those the smallest set holding top_p of their probability (the nucleus; the
    most likely token always stays). Returns (their logits, their token ids), (B, n) each, most
    likely first when a filter is on; top-p marks the tokens it removes with a logit of -inf.
    Sampling among n kept tokens instead of the whole vocabulary makes each draw cheap."""
    if 0 < top_k < logits.size(-1):
        logits, ids = torch.topk(logits, top_k, dim=-1)
    elif top_p < 1.0:
        logits, ids = logits.sort(dim=-1, descending=True)
    else:
        ids = torch.arange(logits.size(-1), device=logits.device).expand_as(logits)
    logits = logits / temperature  # after top-k, which it does not change: fewer logits to divide
    if top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(torch.cumsum(probs, dim=-1) - probs >= top_p, float("-inf"))
    return logits, ids


def sample_token(probs, generators):
    """Draw one index from each row of probs (B, n): a (B, 1) tensor. Row i draws from
    generators[i], a torch.Generator or None (torch's global random state).

    One uniform number per row, placed on the cumulative distribution. (torch.multinomial
    draws an exponential for each of the V entries instead, a cost that grows with the
    vocabulary.) A token of probability 0 is never drawn, by construction: a parallel cumsum (a
    GPU's) can round a filtered-out token's cumulative value above the one before it, a sliver
    of the line where a draw may land, and a draw that lands on a token of probability 0 takes
    the row's most likely token instead."""
    cdf = probs.cumsum(dim=-1)
    u = torch.cat([torch.rand(1, generator=generator, device=cdf.device, dtype=cdf.dtype)
                   for generator in generators])
    drawn = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True).clamp_(max=probs.size(-1) - 1)
    impossible = probs.gather(1, drawn) == 0
    return torch.where(impossible, probs.argmax(dim=-1, keepdim=True), drawn) if impossible.any() else drawn


def restart_point(length, start, block_size):
    """Where a context of tokens[start:length] must begin so the model can read it.

    When it would pass block_size, it restarts from the last block_size // 2 tokens, a fresh
    window like those the model was trained on, and its cache is refilled in one pass over
    them: about one extra position per generated token. (Sliding the cache by one token
    instead would not be exact: in a model of two or more layers, the keys left in the cache
    were computed while the dropped tokens were still in view, which no fresh window can
    reproduce.) So generation with and without the cache gives the same logits."""
    return length - max(1, block_size // 2) if length - start > block_size else start


# -----------------------------------------------------------------------------
# the Decoder: rows of generation sharing one model and one KV cache

@dataclass
class Row:
    """One sequence being generated: its tokens so far and how it picks the next one."""
    id: int
    tokens: list  # the prompt (its last block_size tokens), then every token generated
    prompt_length: int
    sampling: tuple  # (temperature, top_k, top_p), or None for greedy
    penalties: tuple  # (repetition_penalty, frequency_penalty, presence_penalty)
    logit_bias: torch.Tensor  # (V,) added to the logits, or None
    generator: torch.Generator
    max_new_tokens: int
    stop_ids: tuple
    top_logprobs: int
    start: int = 0  # the model reads tokens[start:]

    def penalize(self, logits):
        """This row's logits (1, V) after its repetition penalty, its frequency and presence
        penalties, then its logit_bias; the same logits if it has none of them.

        The frequency and presence penalties are OpenAI's: a token's logit loses frequency_penalty
        for every time this row has generated it, and presence_penalty once if it has generated it
        at all (negative values make repeats more likely)."""
        repetition, frequency, presence = self.penalties
        if repetition != 1.0:
            context = torch.tensor([self.tokens[self.start:]], device=logits.device)
            logits = apply_repetition_penalty(logits, context, repetition)
        if frequency or presence:
            generated = torch.tensor([self.tokens[self.prompt_length:]], dtype=torch.long, device=logits.device)
            counts = torch.zeros_like(logits).scatter_add_(1, generated, torch.ones_like(generated, dtype=logits.dtype))
            logits = logits - counts * frequency - (counts > 0) * presence
        return logits if self.logit_bias is None else logits + self.logit_bias


class Decoder:
    """Rows of generation that share one model and one KV cache: step() runs one forward
    pass, one new position, for all active rows, and picks each row's next token with that
    row's own settings and generator. Rows can be added and removed between steps.

        decoder = Decoder(model, max_rows=8)
        row = decoder.add(prompt_ids, temperature=0.8, max_new_tokens=100, stop_ids=(eot_id,))
        while len(decoder):
            for row, token_id, logprob, top, finished in decoder.step():
                ...

    A row's tokens do not depend on the rows beside it: it has its own cache row, positions,
    context restarts (see restart_point) and generator, and attention masks every other row
    out. (Only float rounding differs: a matrix product over 8 rows may add up in another
    order than over 1, which moves logits in their last bits.) Active rows sit in cache rows
    0 .. len(decoder) - 1 with no gaps (a row that ends is filled by moving the last one
    into its place), so a step reads one run of cache rows without copying them.

    Row ids are in range(max_rows); an id is free again once its row ends. With
    use_cache=False every row re-reads its whole context every step (slow; for comparison).
    Beam search runs a step's two halves itself: logits() for every row, then branch() into
    the continuations it keeps."""

    def __init__(self, model, max_rows, use_cache=True):
        self.model = model
        self.max_rows = max_rows
        self.device = model.wte.weight.device
        # The cache keeps every row's length either way; use_cache=False never fills its buffers.
        self.cache = model.new_kv_cache(max_rows)
        self.use_cache = use_cache
        self.rows = []  # the active rows, in the order of their cache rows

    def __len__(self):
        return len(self.rows)

    @property
    def free_rows(self):
        return self.max_rows - len(self.rows)

    @torch.inference_mode()
    def add(self, prompt_ids, temperature=0.8, top_k=200, top_p=0.95, repetition_penalty=1.0, frequency_penalty=0.0,
            presence_penalty=0.0, logit_bias=None, greedy=False, generator=None, max_new_tokens=200, stop_ids=(),
            top_logprobs=0):
        """Start a row from prompt_ids (its last block_size tokens) and return its id. temperature
        0 means greedy; logit_bias is {token id: bias added to its logit}. The penalties and
        logit_bias apply in that order, before temperature, top-k and top-p (and before greedy's
        choice). Raises ValueError for bad settings or when no row is free."""
        vocab_size = self.model.config.vocab_size
        problem = settings_problem(temperature, top_k, top_p, repetition_penalty, frequency_penalty,
                                   presence_penalty, logit_bias, vocab_size)
        if len(prompt_ids) == 0:
            problem = "generation needs at least one prompt token (use the end-of-text id)"
        elif max_new_tokens < 1 or top_logprobs < 0:
            problem = "need max_new_tokens >= 1 and top_logprobs >= 0"
        elif not self.free_rows:
            problem = f"all {self.max_rows} rows are in use"
        if problem:
            raise ValueError(problem)
        bias = None
        if logit_bias:
            bias = torch.zeros(vocab_size, device=self.device)
            bias[list(logit_bias)] = torch.tensor(list(logit_bias.values()), dtype=torch.float, device=self.device)
        tokens = list(prompt_ids)[-self.model.config.block_size:]
        sampling = None if greedy or temperature == 0 else (temperature, top_k, top_p)
        row = Row(min(set(range(self.max_rows)) - {row.id for row in self.rows}), tokens, len(tokens), sampling,
                  (repetition_penalty, frequency_penalty, presence_penalty), bias, generator, max_new_tokens,
                  tuple(stop_ids), top_logprobs)
        self.rows.append(row)
        self._prefill(len(self.rows) - 1)
        return row.id

    def _prefill(self, slot):
        """Fill cache row `slot` with its row's context but the last token, which the next step reads."""
        row = self.rows[slot]
        self.cache.reset(slot)
        if self.use_cache and len(row.tokens) - row.start > 1:
            with autocast_for(self.device):
                self.model(torch.tensor([row.tokens[row.start:-1]], device=self.device), kv_cache=self.cache,
                           cache_row=slot, head=False)

    @torch.inference_mode()
    def logits(self):
        """The raw logits (rows, V), in fp32, for the token after each active row's tokens (bf16
        autocast on GPUs that have it, as in training; see model.autocast_for). A row whose
        context is full restarts it first (see restart_point). The cache now holds every row's
        tokens: each row must get its next token (step, branch) before the next call."""
        for slot, row in enumerate(self.rows):
            start = restart_point(len(row.tokens), row.start, self.model.config.block_size)
            if start != row.start:
                row.start = start
                self._prefill(slot)
        with autocast_for(self.device):
            if not self.use_cache:
                logits = torch.cat([self.model(torch.tensor([row.tokens[row.start:]], device=self.device))[0][:, -1]
                                    for row in self.rows])
            else:
                last = torch.tensor([[row.tokens[-1]] for row in self.rows], device=self.device)
                logits = self.model(last, kv_cache=self.cache)[0][:, -1]
        return logits.float()

    def _choose(self, logits):
        """The next token id (rows,) of every active row from its raw logits (rows, V): the row's
        penalties and logit_bias (Row.penalize), then its settings and generator. Rows that
        share settings (the common case) are filtered as one batch: every filter works row by
        row, so each row picks what it would pick alone, and only the random draw is made row
        by row."""
        logits = torch.cat([row.penalize(logits[slot, None]) for slot, row in enumerate(self.rows)])
        groups = collections.defaultdict(list)  # settings (None = greedy) -> slots of the rows that use them
        for slot, row in enumerate(self.rows):
            groups[row.sampling].append(slot)
        chosen = torch.empty(len(self.rows), dtype=torch.long, device=self.device)
        for settings, slots in groups.items():
            index = slice(None) if len(groups) == 1 else torch.tensor(slots, device=self.device)
            if settings is None:
                chosen[index] = logits[index].argmax(dim=-1)
            else:
                kept, ids = filter_logits(logits[index], *settings)
                drawn = sample_token(torch.softmax(kept, dim=-1), [self.rows[slot].generator for slot in slots])
                chosen[index] = ids.gather(1, drawn)[:, 0]
        return chosen

    @torch.inference_mode()
    def step(self):
        """One token for every active row: a list of (row id, token id or None, logprob, top, finished).

        token id is None when the row chose a stop id (which is not part of its text). logprob
        is the chosen token's log-probability under the model's raw distribution (before
        penalties, temperature and filters); top is [(token id, logprob)] of the row's
        top_logprobs most likely tokens, or None. A finished row (stop id or max_new_tokens)
        is freed."""
        if not self.rows:
            return []
        logits = self.logits()
        chosen = self._choose(logits)
        log_probs = torch.log_softmax(logits, dim=-1)
        chosen_log_probs = log_probs.gather(1, chosen[:, None])[:, 0].tolist()  # one device sync for all rows
        events = []
        for row, token, logprob, row_log_probs in zip(list(self.rows), chosen.tolist(), chosen_log_probs, log_probs):
            top = None
            if row.top_logprobs:
                values, ids = row_log_probs.topk(min(row.top_logprobs, row_log_probs.numel()))
                top = list(zip(ids.tolist(), values.tolist()))
            stopped = token in row.stop_ids
            if not stopped:
                row.tokens.append(token)
            finished = stopped or len(row.tokens) - row.prompt_length >= row.max_new_tokens
            events.append((row.id, None if stopped else token, logprob, top, finished))
            if finished:
                self._free(row)
        return events

    def branch(self, parents, tokens):
        """Replace the rows with continuations of them: row i becomes row parents[i] (a slot)
        followed by tokens[i], with a copy of its parent's cache row (beam search)."""
        self.cache.copy_rows(parents, range(len(parents)))
        self.rows = [replace(self.rows[parent], id=i, tokens=self.rows[parent].tokens + [token])
                     for i, (parent, token) in enumerate(zip(parents, tokens))]

    @torch.inference_mode()
    def remove(self, row_id):
        """End a row at once (e.g. its client has gone)."""
        for row in self.rows:
            if row.id == row_id:
                return self._free(row)
        raise ValueError(f"no active row {row_id}")

    def _free(self, row):
        slot, last = self.rows.index(row), len(self.rows) - 1
        if slot != last:  # the last row moves into the gap, so active rows stay one run
            self.cache.copy_rows([last], [slot])
            self.rows[slot] = self.rows[last]
        self.rows.pop()


# -----------------------------------------------------------------------------
# generation on a Decoder: sampling, greedy and beam search

@torch.inference_mode()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
             greedy=False, use_cache=True, generator=None, **settings):
    """Generate from a batch of prompts together, or from one.

    prompts: a list of prompts (lists of token ids, of any lengths), decoded as rows of one
    Decoder; generator is then a list with one generator per prompt (or None). Yields
    (prompt index, new token id) as each token is chosen. Or one prompt (a list of token
    ids) with one generator: yields its new token ids. A token in stop_ids ends its prompt's
    generation and is not yielded; temperature 0 means greedy. settings: stop_ids,
    frequency_penalty, presence_penalty and logit_bias, as Decoder.add takes them."""
    one = len(prompts) == 0 or not isinstance(prompts[0], (list, tuple))
    prompts, generators = ([prompts], [generator]) if one else (prompts, generator or [None] * len(prompts))
    if max_new_tokens <= 0:
        return
    decoder = Decoder(model, len(prompts), use_cache)
    index_of = {decoder.add(prompt, temperature, top_k, top_p, repetition_penalty, greedy=greedy,
                            generator=row_generator, max_new_tokens=max_new_tokens, **settings): i
                for i, (prompt, row_generator) in enumerate(zip(prompts, generators, strict=True))}
    while len(decoder):
        for row_id, token_id, *_ in decoder.step():
            if token_id is not None:
                yield token_id if one else (index_of[row_id], token_id)


@torch.inference_mode()
def beam_search(model, prompt_ids, beams, max_new_tokens, length_penalty=1.0, stop_ids=(), use_cache=True):
    """Return the new token ids (without a stop id) of the best hypothesis a beam search of
    `beams` beams finds, as transformers' generate(num_beams=beams) finds it. A hypothesis's
    score is the sum of its tokens' log-probabilities over length ** length_penalty, where
    length counts its new tokens, a final stop id included.

    The beams are rows of one Decoder. Each step ranks every continuation of every live beam by
    its summed log-probability and looks at the best (1 + len(stop_ids)) * beams (at least
    2 * beams): the best `beams` of them that do not stop live on. One that stops (a stop id,
    or max_new_tokens reached) becomes a hypothesis only if it ranks among the best `beams` of
    its step, and the best `beams` hypotheses are kept. The search ends when the best live
    beam, scored at its current length, cannot beat the worst hypothesis kept
    (transformers' heuristic for early_stopping=False)."""
    if max_new_tokens < 1:
        return []
    decoder = Decoder(model, beams, use_cache)
    decoder.add(prompt_ids, greedy=True, max_new_tokens=max_new_tokens)  # one beam to begin with
    scores = torch.zeros(1, device=decoder.device)  # summed log-probabilities of each live beam's new tokens
    hypotheses = []  # the best `beams` that have ended: (score, new token ids), best first
    width = max(2, 1 + len(stop_ids)) * beams
    for length in range(1, max_new_tokens + 1):
        log_probs = torch.log_softmax(decoder.logits(), dim=-1)
        top_scores, top_ids = (scores[:, None] + log_probs).view(-1).topk(min(width, log_probs.numel()))
        parents, tokens, alive = [], [], []
        for rank, (score, flat_id) in enumerate(zip(top_scores.tolist(), top_ids.tolist())):
            parent, token = divmod(flat_id, log_probs.size(1))
            if token in stop_ids or length == max_new_tokens:
                if rank < beams:
                    row = decoder.rows[parent]
                    new_ids = row.tokens[row.prompt_length:] + ([] if token in stop_ids else [token])
                    hypotheses.append((score / length ** length_penalty, new_ids))
            elif len(parents) < beams:
                parents.append(parent)
                tokens.append(token)
                alive.append(score)
        hypotheses = sorted(hypotheses, key=lambda hypothesis: hypothesis[0], reverse=True)[:beams]
        if not parents or (len(hypotheses) == beams and alive[0] / length ** length_penalty <= hypotheses[-1][0]):
            break
        decoder.branch(parents, tokens)
        scores = torch.tensor(alive, device=decoder.device)
    return hypotheses[0][1]


@torch.inference_mode()
def score_prompt(model, prompt_ids, top_n):
    """[(logprob, top)] of prompt_ids[1:], each given the tokens before it: one forward pass,
    log_softmax in fp32. top: the top_n most likely tokens there as [(id, logprob)]."""
    if len(prompt_ids) < 2:
        return []
    ids = torch.tensor([prompt_ids], device=model.wte.weight.device)
    with autocast_for(ids.device):  # bf16 on GPUs that have it natively, as the Decoder generates
        logits, _ = model(ids[:, :-1])
    logprobs = torch.log_softmax(logits[0].float(), dim=-1)  # (T - 1, V)
    best, best_ids = logprobs.topk(top_n, dim=-1)
    chosen = logprobs.gather(1, ids[0, 1:, None])[:, 0]
    return [(logprob, list(zip(i, v))) for logprob, i, v in zip(chosen.tolist(), best_ids.tolist(), best.tolist())]


# -----------------------------------------------------------------------------
# text in and out

def utf8_decoder():
    """An incremental UTF-8 decoder: bytes in, the characters they complete out."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def read_token(tokenizer, decoder, token_id, logprob=None, top=None, final=False):
    """[text piece, logprob, {piece: logprob} or None] of a token read next by `decoder`, its
    sequence's incremental UTF-8 decoder (see utf8_decoder); final: the sequence ends with this
    token, so a character left unfinished becomes U+FFFD.

    A byte-level BPE token can end inside a character: its piece holds only the characters it
    completes (possibly ""), and the token that completes a character carries all of it, so the
    pieces of a sequence join into exactly its text. <|endoftext|> (a document's start or end) is
    no text: it reads as "", and the characters around it as if it were not there. The
    alternatives in `top` [(id, logprob)] are read as if each came in the chosen token's place,
    listed after the chosen token itself, as in the OpenAI API; tokens that read as the same text
    (e.g. "" for two that end inside a character) keep the first entry."""
    def read(reader, read_id):
        return reader.decode(b"" if read_id == tokenizer.eot_id else tokenizer.decode_bytes([read_id]), final)
    alternatives = None
    if top is not None:
        alternatives = {}
        for alternative_id, alternative_logprob in [(token_id, logprob), *top]:
            reader = utf8_decoder()
            reader.setstate(decoder.getstate())
            alternatives.setdefault(read(reader, alternative_id), alternative_logprob)
    return [read(decoder, token_id), logprob, alternatives]


def stream_text(tokenizer, token_ids):
    """Yield the text of a stream of token ids piece by piece, never splitting a UTF-8 character.

    A BPE token may end in the middle of a multi-byte character (every Persian letter is two
    bytes), so bytes are held back until the character they start is complete."""
    decoder = utf8_decoder()
    for token_id in token_ids:
        piece, _, _ = read_token(tokenizer, decoder, token_id)
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


def encode_prompt(text, tokenizer, block_size):
    """(normalised text, ids): a document start, <|endoftext|> then the text, cropped to the context.

    The tokenizer normalises the text as the training text was, so Arabic yeh/kaf, digits and
    spacing reach the model in the form it learned."""
    text = tokenizer.normalize(text)
    ids = [tokenizer.eot_id] + tokenizer.encode_array(text, normalized=True).tolist()
    if len(ids) > block_size:
        print(f"note: the prompt is {len(ids)} tokens but the model reads {block_size}; "
              f"keeping the last {block_size}", file=sys.stderr)
        ids = ids[-block_size:]
    return text, ids


def settings_problem(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, frequency_penalty=0.0,
                     presence_penalty=0.0, logit_bias=None, vocab_size=None):
    """What is wrong with these decoding settings, in one line, or None if they have a meaning.
    logit_bias is {token id: bias}, whose ids must be below vocab_size."""
    if temperature < 0:
        return f"temperature must be >= 0 (0 = greedy), got {temperature}"
    if not 0 < top_p <= 1:
        return f"top_p must be in (0, 1], got {top_p}"
    if top_k < 0 or repetition_penalty <= 0:
        return "top_k must be >= 0 and repetition_penalty > 0"
    if not (-2 <= frequency_penalty <= 2 and -2 <= presence_penalty <= 2):
        return f"frequency_penalty and presence_penalty must be in [-2, 2], got {frequency_penalty}, {presence_penalty}"
    for token, bias in (logit_bias or {}).items():
        if not (isinstance(token, int) and 0 <= token < vocab_size):
            return f"logit_bias names token {token!r}, which is not in the vocabulary"
        if not -100 <= bias <= 100:
            return f"logit_bias values must be in [-100, 100], got {bias} for token {token}"
    return None


def check_settings(config):
    """Refuse decoding settings that have no meaning, before any work is done."""
    problem = settings_problem(**{key: config[key] for key in SETTINGS if key in config})
    if problem:
        raise common.UsageError(problem)


def load_out_dir(out_dir, device, quantize="none"):
    """(model, tokenizer) of the checkpoint in out_dir, with its weights quantized as asked
    (model.quantize_weights)."""
    model, tokenizer, _ = load_checkpoint(out_dir, device)
    return quantize_weights(model, quantize), tokenizer


loaded_checkpoints = {}  # generate_text: out_dir -> (checkpoint's modification time, what load_out_dir returned)


def generate_text(prompt, max_new_tokens=200, temperature=0.8, top_k=200, top_p=0.95, seed=None,
                  out_dir=None, model=None, tokenizer=None):
    """Return the text the model writes after `prompt`: the continuation only, without the prompt.

        from sample import generate_text
        print(generate_text("ایران کشوری است", max_new_tokens=50, seed=1))

    Uses model and tokenizer when given, else the checkpoint in out_dir (default: sample.py's
    --out_dir), loaded once and kept for later calls until the file changes. The prompt is
    normalised as the training text was. Generation stops at the end of the document or
    after max_new_tokens; seed=None draws from torch's global random state."""
    if model is None:
        out_dir = os.path.abspath(out_dir or DEFAULTS["out_dir"])
        ckpt_path = checkpoint_path(out_dir)
        mtime = os.path.getmtime(ckpt_path) if os.path.isfile(ckpt_path) else None
        if out_dir not in loaded_checkpoints or loaded_checkpoints[out_dir][0] != mtime:
            loaded_checkpoints[out_dir] = mtime, load_out_dir(out_dir, resolve_device("auto"))
        model, tokenizer = loaded_checkpoints[out_dir][1]
    elif tokenizer is None:
        raise ValueError("generate_text needs the model's tokenizer as well as the model")
    _, prompt_ids = encode_prompt(prompt, tokenizer, model.config.block_size)
    generator = None if seed is None else torch.Generator(model.wte.weight.device).manual_seed(seed)
    new_ids = generate(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, generator=generator,
                       stop_ids=(tokenizer.eot_id,))
    return "".join(stream_text(tokenizer, new_ids))


def main(argv=None):
    config = common.parse_config(DEFAULTS, argv)
    check_settings(config)
    if config["beams"] < 1 or config["num_samples"] < 1:
        raise common.UsageError("beams and num_samples must be at least 1")
    if config["beams"] > 1 and config["num_samples"] > 1:
        raise common.UsageError("beam search has no randomness: every sample would be the same (use num_samples=1)")
    penalties = (config["repetition_penalty"], config["frequency_penalty"], config["presence_penalty"])
    if config["beams"] > 1 and penalties != (1, 0, 0):
        raise common.UsageError("beam search applies no penalties: leave repetition, frequency and presence off")
    device = resolve_device(config["device"])
    model, tokenizer = load_out_dir(config["out_dir"], device, config["quantize"])
    prompt_text, prompt_ids = encode_prompt(read_prompt(config["start"]), tokenizer, model.config.block_size)
    sys.stdout.reconfigure(encoding="utf-8")  # Persian text even where the console says otherwise
    started = time.perf_counter()
    if config["beams"] > 1:  # one sample, printed once the search ends
        new_ids = beam_search(model, prompt_ids, config["beams"], config["max_new_tokens"], config["length_penalty"],
                              (tokenizer.eot_id,), config["use_cache"])
        tokens = [(0, token_id) for token_id in new_ids]
    else:  # all samples in one batch; sample i draws from seed + i, as it would alone with --seed=seed+i
        generators = [torch.Generator(device=device).manual_seed(config["seed"] + i)
                      for i in range(config["num_samples"])]
        tokens = generate(model, [prompt_ids] * config["num_samples"], config["max_new_tokens"],
                          greedy=config["greedy"], use_cache=config["use_cache"], generator=generators,
                          stop_ids=(tokenizer.eot_id,), **{key: config[key] for key in SETTINGS})
    produced = [[] for _ in range(config["num_samples"])]

    def first_sample():  # streams while the batch runs; the others are complete when it ends
        for i, token_id in tokens:
            produced[i].append(token_id)
            if i == 0:
                yield token_id
    for i, new_ids in enumerate([first_sample()] + produced[1:]):
        print(prompt_text, end="", flush=True)
        for piece in stream_text(tokenizer, new_ids):
            print(piece, end="", flush=True)
        print("\n" + "-" * 40 if i + 1 < len(produced) else "", flush=True)
    seconds = time.perf_counter() - started
    count = sum(len(ids) for ids in produced)
    print(f"{count} tokens in {seconds:.2f} s ({count / seconds:.1f} tokens/s)", file=sys.stderr)


if __name__ == "__main__":
    common.run(main)
