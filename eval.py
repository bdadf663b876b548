"""
Evaluate a checkpoint on held-out text: exact perplexity, bits per byte, word perplexity,
and ROUGE, BLEU, chrF and diversity of the text it writes.

    python eval.py --out_dir=out-fawiki-small                     # the test split of its data_dir
    python eval.py --out_dir=out-fawiki-small --data=data/fawiki/val.bin
    python eval.py --out_dir=out-fawiki-small --jsonl=../shared/data/persian/news.jsonl --max_tokens=200000
    python eval.py --out_dir=out-fawiki-small --text=book.txt --stride=128

Prints a table and writes a JSON report (out_dir/eval_<input name>.json, or --report=PATH).
Every token of the input is scored exactly once by sliding a window over the whole token
stream; past the first window, each with at least block_size - stride tokens of context.
"""

import json
import math
import os
import pathlib
import sys
import types

import numpy as np
import regex
import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

import common
import sample
from model import autocast_for, load_checkpoint, quantize_weights, resolve_device, tokenizer_hash
from prepare import iter_documents

GIVE_ONE_INPUT = "give one of --data_dir=DIR, --data=FILE.bin, --text=FILE.txt, --jsonl=FILE.jsonl"
DECODING = ("temperature", "top_k", "top_p", "repetition_penalty", "greedy", "seed")
DEFAULTS = dict(
    out_dir="out-fawiki-small",  # folder holding ckpt.pt; the report is written there too
    data_dir="",  # prepare.py's folder: its test.bin is scored (val.bin if it has none); empty = the
    # checkpoint's data_dir, used when none of data_dir, data, text and jsonl is given ...
    data="",  # ... or a token file written by prepare.py, e.g. data/fawiki/val.bin ...
    text="",  # ... or a UTF-8 text file (a Project Gutenberg header/footer is stripped) ...
    jsonl="",  # ... or a JSON-lines file with a "text" field on every line
    report="",  # JSON report path; empty = out_dir/eval_<input name>.json
    max_tokens=0,  # score only the first this many tokens (0 = all) to bound long evaluations
    stride=0,  # tokens the window moves each step; 0 = half the context. Smaller: more context, slower
    batch_size=8,  # windows scored together (memory grows with batch_size * block_size * vocab_size)
    rouge_docs=20,  # held-out documents continued for ROUGE and diversity; 0 = skip generation
    prompt_tokens=32,  # K: the model reads a document's first K tokens ...
    reference_tokens=64,  # N: ... writes N tokens, which are compared with the document's next N
    # decoding of the continuations: temperature, top_k, top_p, repetition_penalty, greedy, seed
    **{key: sample.DEFAULTS[key] for key in DECODING},
    repeat_n=4,  # n of the "repeated n-grams" share
    device="auto",  # cpu, cuda, cuda:1, mps ... or auto (CUDA when available)
    quantize="none",  # "int8" or "bf16": score the model with those weights (CPU only), as sample.py --quantize runs it
)


# -----------------------------------------------------------------------------
# exact token-level likelihood with a sliding window

def sliding_windows(num_tokens, context, stride):
    """[(begin, first_scored, end)]: a window reads tokens[begin:end] and scores its predictions
    of tokens[first_scored..end]. Together the windows score tokens 1..num_tokens-1 once each.

    All windows are `context` long (unless the text is shorter), the last one aligned to the
    end of the text, so a token scored past the first window has at least context - stride
    tokens before it."""
    windows, scored_until = [], 0
    while scored_until < num_tokens - 1:
        end = min(scored_until + stride if windows else context, num_tokens - 1)
        windows.append((max(0, end - context), scored_until + 1, end))
        scored_until = end
    return windows


@torch.no_grad()
def token_nll(model, tokens, stride, batch_size=8):
    """Negative log-likelihood in nats of tokens[1:] (an int64 array), each given the tokens before
    it (float64 array), read in windows of the model's context that move by stride tokens."""
    device = next(model.parameters()).device
    nll = np.full(len(tokens) - 1, np.nan)
    windows = sliding_windows(len(tokens), model.config.block_size, stride)
    for i in range(0, len(windows), batch_size):
        batch = windows[i:i + batch_size]
        rows = torch.from_numpy(np.stack([tokens[begin:end + 1] for begin, _, end in batch])).to(device)
        with autocast_for(device):  # bf16 on GPUs that have it natively, else fp32
            logits, _ = model(rows[:, :-1])
        # the log-softmax runs in fp32 whatever the model ran in, so figures stay comparable
        losses = F.cross_entropy(logits.float().transpose(1, 2), rows[:, 1:], reduction="none")
        for row_losses, (begin, first_scored, end) in zip(losses.double().cpu().numpy(), batch):
            nll[first_scored - 1:end] = row_losses[first_scored - begin - 1:]  # the rest: an earlier window's
    return nll


def bits_per_byte(total_nll, num_bytes):
    """Total negative log-likelihood (nats) -> bits per UTF-8 byte of the text."""
    return total_nll / math.log(2) / num_bytes


# -----------------------------------------------------------------------------
# text overlap and diversity

WORD = regex.compile(r"[\p{L}\p{M}\p{N}\u200c]+")


def words(text):
    """Words of any script: letters, combining marks (Persian diacritics), digits and ZWNJ
    (the half-space inside Persian words such as می‌خواهم), lower-cased for Latin text."""
    return [w for w in (m.strip("\u200c") for m in WORD.findall(text.lower())) if w]


# rouge-score's own tokenizer keeps only [a-z0-9]: identical Persian texts would score 0
ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"],
                                 tokenizer=types.SimpleNamespace(tokenize=words))


def rouge(references, predictions):
    """Mean ROUGE-1/2/L F1 of each prediction against its reference."""
    scores = [ROUGE.score(reference, prediction) for reference, prediction in zip(references, predictions)]
    return {name: float(np.mean([score[name].fmeasure for score in scores])) if scores else 0.0
            for name in ("rouge1", "rouge2", "rougeL")}


# BLEU's tokenizer. What sacrebleu's tokenizers do to Persian (sacrebleu 2.6): "13a" and "none"
# split only at spaces, so punctuation stays glued to words (بخوانم، «شاهنامه» را؛ are tokens, and
# a word before a comma is a different word); "zh" cuts words at ZWNJ (می + ZWNJ + خواهم); "char"
# scores single characters; "flores101"/"flores200" need sentencepiece and a downloaded model.
# "intl" splits off every Unicode punctuation mark, ، ؛ ؟ « » included, and keeps letters, marks
# and ZWNJ together: می‌خواهم is one token. chrF reads characters with whitespace removed, and
# ZWNJ is not whitespace, so it stays a character of its word there too.
BLEU_TOKENIZE = "intl"


def bleu_chrf(references, predictions):
    """Corpus BLEU and chrF of the predictions against their references, 0-100 as sacrebleu and
    papers report them, and sacrebleu's signature of each, which pins down how they were computed."""
    metrics = {"bleu": BLEU(tokenize=BLEU_TOKENIZE), "chrf": CHRF()}
    return ({name: metric.corpus_score(predictions, [references]).score for name, metric in metrics.items()},
            {name: str(metric.get_signature()) for name, metric in metrics.items()})


def ngrams(text, n):
    """The word n-grams of a text, in order."""
    seq = words(text)
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct(texts, n):
    """Distinct-n: unique word n-grams / all word n-grams, over all the texts together."""
    grams = [gram for text in texts for gram in ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeated_share(texts, n):
    """Share of word n-grams that repeat an earlier n-gram of the same text (loops score high)."""
    per_text = [ngrams(text, n) for text in texts]
    total = sum(map(len, per_text))
    return sum(len(grams) - len(set(grams)) for grams in per_text) / total if total else 0.0


def diversity(texts, repeat_n):
    """Distinct-1, distinct-2 and the repeated repeat_n-gram share of the texts."""
    return {"distinct_1": distinct(texts, 1), "distinct_2": distinct(texts, 2),
            f"repeated_{repeat_n}gram_share": repeated_share(texts, repeat_n)}


# -----------------------------------------------------------------------------
# inputs

def check_options(config):
    """Refuse options without a meaning before any work is done."""
    sample.check_settings(config)
    at_least_one = ("batch_size", "prompt_tokens", "reference_tokens", "repeat_n")
    if min(config[key] for key in ("stride", "max_tokens", "rouge_docs")) < 0 or min(map(config.get, at_least_one)) < 1:
        raise common.UsageError("stride, max_tokens and rouge_docs must be >= 0; "
                                "batch_size, prompt_tokens, reference_tokens and repeat_n >= 1")
    named = [key for key in ("data_dir", "data", "text", "jsonl") if config[key]]
    if len(named) > 1:
        raise common.UsageError(GIVE_ONE_INPUT)
    if named and named[0] != "data_dir" and not os.path.isfile(config[named[0]]):
        raise common.UsageError(f"no such file: {config[named[0]]}")


def load_token_file(path, tokenizer, tokenizer_sha256):
    """Tokens of a prepare.py .bin file, refusing files made with a different tokenizer."""
    tokenizer_path = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer.json")
    if not os.path.isfile(tokenizer_path):
        print(f"note: no tokenizer.json beside {path}; cannot check that it matches the checkpoint", file=sys.stderr)
    elif tokenizer_hash(pathlib.Path(tokenizer_path).read_text(encoding="utf-8")) != tokenizer_sha256:
        raise common.UsageError(f"{path} was encoded with {tokenizer_path}, which is not the "
                                f"checkpoint's tokenizer: evaluate on data prepared for this model")
    tokens = common.load_tokens(path)
    if len(tokens) and int(tokens.max()) >= tokenizer.vocab_size:
        raise common.UsageError(f"{path} holds token id {int(tokens.max())}, beyond the checkpoint's "
                                f"vocabulary of {tokenizer.vocab_size}: wrong tokenizer or corrupt file")
    return tokens


def encode_text_file(path, tokenizer, max_tokens):
    """Tokens of a .txt or .jsonl file laid out as prepare.py lays out its .bin files: each document
    followed by <|endoftext|>. The documents are read and normalized as prepare.py read the training
    text, with the settings the tokenizer records (prepare.py's defaults where it records none), and
    encoded as they are, not normalized a second time."""
    ids = []
    for document in iter_documents(path, **(tokenizer.normalization or {})):
        ids += tokenizer.encode_array(document, normalized=True).tolist() + [tokenizer.eot_id]
        if max_tokens and len(ids) >= max_tokens:
            break
    return np.array(ids, dtype=np.int64)


def read_input(config, tokenizer, ckpt):
    """(data, text or jsonl; its path; the tokens to score) of the input: the file an option names,
    else the held-out split of --data_dir, or of the checkpoint's data_dir (test.bin, or val.bin
    without it). At most max_tokens tokens, starting with <|endoftext|> as every document the model
    read did."""
    kind = next((key for key in ("data", "text", "jsonl") if config[key]), "data")
    path = config[kind]
    if not path:
        data_dir = config["data_dir"] or (ckpt.get("config") or {}).get("data_dir")
        if not data_dir:
            raise common.UsageError(f"the checkpoint records no data_dir: {GIVE_ONE_INPUT}")
        held_out = [os.path.join(data_dir, f"{split}.bin") for split in ("test", "val")]
        path = next((candidate for candidate in held_out if os.path.isfile(candidate)), None)
        if path is None:
            raise common.UsageError(f"no test.bin or val.bin in {data_dir} (run prepare.py, or give --data=FILE.bin)")
    tokens = (load_token_file(path, tokenizer, ckpt["tokenizer_sha256"]) if kind == "data"
              else encode_text_file(path, tokenizer, config["max_tokens"]))
    tokens = np.asarray(tokens[:config["max_tokens"] or None], dtype=np.int64)
    if len(tokens) == 0:
        raise common.UsageError(f"{path} holds no tokens to evaluate")
    if tokens[0] != tokenizer.eot_id:
        tokens = np.concatenate([[tokenizer.eot_id], tokens])
    return kind, path, tokens


def documents(stream, eot_id):
    """(begin, end) of every document: the runs of tokens between <|endoftext|> tokens."""
    bounds = [-1] + np.flatnonzero(stream == eot_id).tolist() + [len(stream)]
    return [(a + 1, b) for a, b in zip(bounds, bounds[1:]) if b > a + 1]


# -----------------------------------------------------------------------------
# the evaluation

def likelihood(model, tokenizer, stream, stride, batch_size):
    """Cross-entropy, perplexity, bits per byte and word perplexity of the stream."""
    # <|endoftext|> tokens are scored (the model must predict where a document ends) but
    # are no bytes or words of the text
    texts = [tokenizer.decode_bytes(stream[begin:end].tolist()) for begin, end in documents(stream, tokenizer.eot_id)]
    num_bytes = sum(map(len, texts))
    num_words = sum(len(text.decode("utf-8", errors="replace").split()) for text in texts)
    total = float(token_nll(model, stream, stride, batch_size).sum())
    num_tokens = len(stream) - 1
    return {
        "tokens": num_tokens, "bytes": num_bytes, "words": num_words,
        "cross_entropy": total / num_tokens, "perplexity": math.exp(total / num_tokens),
        "bits_per_byte": bits_per_byte(total, num_bytes) if num_bytes else None,
        "word_perplexity": math.exp(total / num_words) if num_words else None,
    }


def continuation_text(tokenizer, prompt_ids, new_ids):
    """Text of new_ids read after prompt_ids: a character whose bytes the two share belongs to it."""
    decoder = sample.utf8_decoder()
    decoder.decode(tokenizer.decode_bytes(prompt_ids))
    return decoder.decode(tokenizer.decode_bytes(new_ids), final=True)


def continuations(model, tokenizer, stream, config):
    """(figures, the report's "generation" section) of the model's continuations of up to rouge_docs
    documents spread over the stream: it reads a document's first prompt_tokens tokens and writes
    reference_tokens more, which ROUGE, BLEU, chrF and diversity compare with the document's own
    next tokens."""
    k, n = config["prompt_tokens"], config["reference_tokens"]
    long_enough = [begin for begin, end in documents(stream, tokenizer.eot_id) if end - begin >= k + n]
    if config["rouge_docs"] and not long_enough:
        print(f"note: no document of {k + n} tokens or more to continue; ROUGE, BLEU and chrF skipped",
              file=sys.stderr)
    spread = np.linspace(0, len(long_enough) - 1, config["rouge_docs"] if long_enough else 0)  # evenly apart
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(config["seed"])
    examples = []
    for begin in (long_enough[i] for i in np.unique(spread.round().astype(int))):
        prompt = [tokenizer.eot_id] + stream[begin:begin + k].tolist()
        new_ids = sample.generate(model, prompt, n, generator=generator, stop_ids=(tokenizer.eot_id,),
                                  **{key: config[key] for key in DECODING if key != "seed"})
        examples.append({"prompt": tokenizer.decode(prompt[1:]),
                         "reference": continuation_text(tokenizer, prompt, stream[begin + k:begin + k + n].tolist()),
                         "generated": continuation_text(tokenizer, prompt, list(new_ids))})
    section = {"documents": len(examples),
               **{key: config[key] for key in ("prompt_tokens", "reference_tokens", *DECODING)},
               "sacrebleu_signatures": {}, "examples": examples[:3]}
    if not examples:
        return {}, section
    references, generations = [e["reference"] for e in examples], [e["generated"] for e in examples]
    scores, section["sacrebleu_signatures"] = bleu_chrf(references, generations)
    figures = {**rouge(references, generations), **scores, **diversity(generations, config["repeat_n"])}
    # the same measures on the true continuations: what natural text scores
    figures.update({f"reference_{key}": value for key, value in diversity(references, config["repeat_n"]).items()})
    return figures, section


def main(argv=None):
    config = common.parse_config(DEFAULTS, argv)
    check_options(config)
    ckpt_path = os.path.join(config["out_dir"], "ckpt.pt")
    model, tokenizer, ckpt = load_checkpoint(ckpt_path, resolve_device(config["device"]))
    model = quantize_weights(model, config["quantize"])
    stride = config["stride"] or max(1, model.config.block_size // 2)
    if stride > model.config.block_size:
        raise common.UsageError(f"stride {stride} is longer than the context "
                                f"({model.config.block_size}): tokens would be skipped")
    kind, source, stream = read_input(config, tokenizer, ckpt)
    name = os.path.splitext(os.path.basename(source))[0]
    split = name if kind == "data" else None  # a token file is named after its split; a text is scored whole

    results = likelihood(model, tokenizer, stream, stride, config["batch_size"])
    figures, generation = continuations(model, tokenizer, stream, config)
    report = {
        "checkpoint": os.path.abspath(ckpt_path), "iter_num": ckpt.get("iter_num"),
        "input": {kind: os.path.abspath(source)}, "split": split, "context": model.config.block_size,
        "quantize": config["quantize"], "stride": stride, "max_tokens": config["max_tokens"],
        "results": {**results, **figures}, "generation": generation,
    }
    report_path = config["report"] or os.path.join(config["out_dir"], f"eval_{name}.json")
    with common.atomic_path(report_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=2)

    scored = f"the {split} split, {source}" if split else source
    print(f"{ckpt_path} (step {ckpt.get('iter_num')}) on {scored}: context {model.config.block_size}, "
          f"stride {stride}, {generation['documents']} documents continued")
    for key, value in report["results"].items():
        print(f"{key:<34}{value:>14.4f}" if isinstance(value, float) else f"{key:<34}{value!s:>14}")
    for metric, signature in generation["sacrebleu_signatures"].items():
        print(f"{metric} signature: {signature}")
    print(f"report written to {report_path}")


if __name__ == "__main__":
    common.run(main)
