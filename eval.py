"""
Evaluate a checkpoint on held-out text: exact perplexity, bits per byte, word perplexity,
and ROUGE, BLEU, chrF and diversity of the text it writes.

    python eval.py --out_dir=out-fawiki-small                     # the test split of its data_dir
    python eval.py --out_dir=out-fawiki-small --data=data/fawiki/val.bin
    python eval.py --out_dir=out-fawiki-small --jsonl=../shared/data/persian/news.jsonl --max_tokens=200000
    python eval.py --out_dir=out-fawiki-small --text=book.txt --stride=128

Prints a table and writes a JSON report (out_dir/eval_<input name>.json, or --report=PATH).
Every token of the input is scored exactly once, each with at least block_size - stride tokens
of context, by sliding a window over the whole token stream.
"""

import codecs
import json
import math
import os
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
    end of the text, so a scored token always has at least context - stride tokens before it."""
    windows, scored_until = [], 0
    while scored_until < num_tokens - 1:
        end = min(scored_until + stride if windows else context, num_tokens - 1)
        windows.append((max(0, end - context), scored_until + 1, end))
        scored_until = end
    return windows


@torch.no_grad()
def token_nll(model, tokens, stride=0, batch_size=8):
    """Negative log-likelihood in nats of tokens[1:], each given the tokens before it (float64 array)."""
    from model import autocast_for
    context = model.config.block_size
    stride = stride or max(1, context // 2)
    device = next(model.parameters()).device
    nll = np.full(len(tokens) - 1, np.nan)
    windows = sliding_windows(len(tokens), context, stride)
    for i in range(0, len(windows), batch_size):
        batch = windows[i:i + batch_size]
        rows = np.stack([np.asarray(tokens[begin:end + 1], dtype=np.int64) for begin, _, end in batch])
        inputs = torch.from_numpy(rows[:, :-1]).to(device)
        targets = torch.from_numpy(rows[:, 1:].copy()).to(device)  # a copy: the inputs overlap it
        for row, (begin, first_scored, _) in zip(targets, batch):
            row[:first_scored - begin - 1] = -1  # already scored by an earlier window
        with autocast_for(device):  # bf16 on GPUs that have it natively, else fp32
            logits, _ = model(inputs)
        # the log-softmax runs in fp32 whatever the model ran in, so figures stay comparable
        losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1,
                                 reduction="none").view_as(targets).double().cpu().numpy()
        for row_losses, (begin, first_scored, end) in zip(losses, batch):
            nll[first_scored - 1:end] = row_losses[first_scored - begin - 1:]
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
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for reference, prediction in zip(references, predictions):
        for name, score in ROUGE.score(reference, prediction).items():
            totals[name] += score.fmeasure
    return {name: total / max(len(references), 1) for name, total in totals.items()}


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
    scores, signatures = {}, {}
    for name, metric in (("bleu", BLEU(tokenize=BLEU_TOKENIZE)), ("chrf", CHRF())):
        scores[name] = metric.corpus_score(predictions, [references]).score
        signatures[name] = str(metric.get_signature())
    return scores, signatures


def ngrams(seq, n):
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct(texts, n):
    """Distinct-n: unique word n-grams / all word n-grams, over all the texts together."""
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeated_share(texts, n):
    """Share of word n-grams that repeat an earlier n-gram of the same text (loops score high)."""
    repeats = total = 0
    for text in texts:
        grams = ngrams(words(text), n)
        repeats += len(grams) - len(set(grams))
        total += len(grams)
    return repeats / total if total else 0.0


def diversity(texts, repeat_n):
    return {"distinct_1": distinct(texts, 1), "distinct_2": distinct(texts, 2),
            f"repeated_{repeat_n}gram_share": repeated_share(texts, repeat_n)}


# -----------------------------------------------------------------------------
# inputs

def load_token_file(path, tokenizer, ckpt):
    """Tokens of a prepare.py .bin file, refusing files made with a different tokenizer."""
    from model import tokenizer_hash
    tokenizer_path = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer.json")
    if os.path.isfile(tokenizer_path):
        with open(tokenizer_path, encoding="utf-8") as f:
            sha256 = tokenizer_hash(f.read())
        if sha256 != ckpt["tokenizer_sha256"]:
            raise common.UsageError(f"{path} was encoded with {tokenizer_path}, which is not the "
                                    f"checkpoint's tokenizer: evaluate on data prepared for this model")
    else:
        print(f"note: no tokenizer.json beside {path}; cannot check that it matches the checkpoint",
              file=sys.stderr)
    tokens = common.load_tokens(path)
    if len(tokens) and int(tokens.max()) >= tokenizer.vocab_size:
        raise common.UsageError(f"{path} holds token id {int(tokens.max())}, beyond the checkpoint's "
                                f"vocabulary of {tokenizer.vocab_size}: wrong tokenizer or corrupt file")
    return tokens


def encode_documents(path, tokenizer, max_tokens, normalization=None):
    """Documents of a .txt or .jsonl file, normalised as prepare.py normalised the training text
    (normalization: its options, kept in the checkpoint) and laid out as in its .bin files: each
    document followed by <|endoftext|>."""
    from prepare import iter_documents
    parts, num_tokens = [], 0
    for document in iter_documents(path, **(normalization or {})):
        parts.append(np.array(tokenizer.encode(document) + [tokenizer.eot_id], dtype=np.int64))
        num_tokens += len(parts[-1])
        if max_tokens and num_tokens >= max_tokens:
            break
    if not parts:
        raise common.UsageError(f"{path} holds no text to evaluate")
    return np.concatenate(parts)


def held_out_file(data_dir):
    """(split, path) of the held-out tokens of a prepare.py folder: test.bin, or val.bin without it."""
    for split in ("test", "val"):
        path = os.path.join(data_dir, f"{split}.bin")
        if os.path.isfile(path):
            return split, path
    raise common.UsageError(f"no test.bin or val.bin in {data_dir} (run prepare.py, or give --data=FILE.bin)")


def documents(stream, eot_id):
    """(begin, end) of every document: the runs of tokens between <|endoftext|> tokens."""
    bounds = [-1] + np.flatnonzero(stream == eot_id).tolist() + [len(stream)]
    return [(a + 1, b) for a, b in zip(bounds, bounds[1:]) if b > a + 1]


# -----------------------------------------------------------------------------

def continuation_text(tokenizer, prompt_ids, new_ids):
    """Text of new_ids read after prompt_ids: a character whose bytes the two share belongs to it."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoder.decode(tokenizer.decode_bytes(prompt_ids))
    return decoder.decode(tokenizer.decode_bytes(new_ids), final=True)


def continue_documents(model, tokenizer, stream, config):
    """(prompts, true continuations, generated ones) of up to rouge_docs documents spread over the stream."""
    k, n = config["prompt_tokens"], config["reference_tokens"]
    long_enough = [(a, b) for a, b in documents(stream, tokenizer.eot_id) if b - a >= k + n]
    if not config["rouge_docs"] or not long_enough:
        return [], [], []
    picks = np.unique(np.linspace(0, len(long_enough) - 1, config["rouge_docs"]).round().astype(int))
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(config["seed"])
    prompts, references, generations = [], [], []
    for begin, _ in (long_enough[i] for i in picks):
        prompt = [tokenizer.eot_id] + stream[begin:begin + k].tolist()
        prompts.append(tokenizer.decode(prompt[1:]))
        new_ids = sample.generate(model, prompt, n, config["temperature"], config["top_k"], config["top_p"],
                                  config["repetition_penalty"], config["greedy"], generator=generator,
                                  stop_ids=(tokenizer.eot_id,))
        generations.append(continuation_text(tokenizer, prompt, list(new_ids)))
        references.append(continuation_text(tokenizer, prompt, stream[begin + k:begin + k + n].tolist()))
    return prompts, references, generations


def main(argv=None):
    config, positional = common.configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if positional:
        raise common.UsageError(f"unexpected argument {positional[0]!r} (use --key=value)")
    sources = [key for key in ("data_dir", "data", "text", "jsonl") if config[key]]
    if len(sources) > 1:
        raise common.UsageError("give one of --data_dir=DIR, --data=FILE.bin, --text=FILE.txt, --jsonl=FILE.jsonl")
    kind = sources[0] if sources else "data_dir"
    if kind != "data_dir" and not os.path.isfile(config[kind]):
        raise common.UsageError(f"no such file: {config[kind]}")
    sample.check_settings(config)
    if config["stride"] < 0 or min(config["batch_size"], config["prompt_tokens"],
                                   config["reference_tokens"]) < 1:
        raise common.UsageError("stride must be >= 0; batch_size, prompt_tokens and reference_tokens >= 1")
    from model import load_out_dir_checkpoint, quantize_weights
    device = common.resolve_device(config["device"], None)
    model, tokenizer, ckpt = load_out_dir_checkpoint(config["out_dir"], device)
    ckpt_path = os.path.join(config["out_dir"], "ckpt.pt")  # named in the report
    model = quantize_weights(model, config["quantize"])
    if config["stride"] > model.config.block_size:
        raise common.UsageError(f"stride {config['stride']} is longer than the context "
                                f"({model.config.block_size}): tokens would be skipped")

    if kind == "data_dir":
        data_dir = config["data_dir"] or (ckpt.get("config") or {}).get("data_dir")
        if not data_dir:
            raise common.UsageError("the checkpoint records no data_dir: give one of --data_dir=DIR, "
                                    "--data=FILE.bin, --text=FILE.txt, --jsonl=FILE.jsonl")
        split, source = held_out_file(data_dir)
    else:  # a token file is named after its split; a text is scored whole
        source = config[kind]
        split = os.path.splitext(os.path.basename(source))[0] if kind == "data" else None
    if kind in ("data_dir", "data"):
        stream = load_token_file(source, tokenizer, ckpt)
    else:
        stream = encode_documents(source, tokenizer, config["max_tokens"], tokenizer.normalization)
    if config["max_tokens"]:
        stream = stream[:config["max_tokens"]]
    if len(stream) == 0:
        raise common.UsageError(f"{source} holds no tokens to evaluate")
    stream = np.asarray(stream, dtype=np.int64)
    if stream[0] != tokenizer.eot_id:  # the model reads every document after an <|endoftext|>
        stream = np.concatenate([[tokenizer.eot_id], stream])

    # <|endoftext|> tokens are scored (the model must predict where a document ends) but
    # are no bytes or words of the text
    num_bytes = num_words = 0
    for begin, end in documents(stream, tokenizer.eot_id):
        text_bytes = tokenizer.decode_bytes(stream[begin:end].tolist())
        num_bytes += len(text_bytes)
        num_words += len(text_bytes.decode("utf-8", errors="replace").split())
    nll = token_nll(model, stream, config["stride"], config["batch_size"])
    total = float(nll.sum())
    results = {
        "tokens": len(nll), "bytes": num_bytes, "words": num_words,
        "cross_entropy": total / len(nll), "perplexity": math.exp(total / len(nll)),
        "bits_per_byte": bits_per_byte(total, num_bytes) if num_bytes else None,
        "word_perplexity": math.exp(total / num_words) if num_words else None,
    }

    prompts, references, generations = continue_documents(model, tokenizer, stream, config)
    if generations:
        results.update(rouge(references, generations))
        scores, signatures = bleu_chrf(references, generations)
        results.update(scores)
        results.update(diversity(generations, config["repeat_n"]))
        # the same measures on the true continuations: what natural text scores
        results.update({f"reference_{key}": value
                        for key, value in diversity(references, config["repeat_n"]).items()})
    else:
        print(f"note: no document of {config['prompt_tokens'] + config['reference_tokens']} tokens "
              f"or more to continue; ROUGE, BLEU and chrF skipped", file=sys.stderr)
        signatures = {}

    report = {
        "checkpoint": os.path.abspath(ckpt_path), "iter_num": ckpt.get("iter_num"),
        "input": {"data" if kind == "data_dir" else kind: os.path.abspath(source)}, "split": split,
        "context": model.config.block_size, "quantize": config["quantize"],
        "stride": config["stride"] or max(1, model.config.block_size // 2),
        "max_tokens": config["max_tokens"],
        "results": results,
        "generation": {
            "documents": len(generations), "prompt_tokens": config["prompt_tokens"],
            "reference_tokens": config["reference_tokens"],
            **{key: config[key] for key in DECODING},
            "sacrebleu_signatures": signatures,
            "examples": [{"prompt": p, "reference": r, "generated": g}
                         for p, r, g in zip(prompts[:3], references[:3], generations[:3])],
        },
    }
    name = os.path.splitext(os.path.basename(source))[0]
    report_path = config["report"] or os.path.join(config["out_dir"], f"eval_{name}.json")
    with common.atomic_path(report_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f, ensure_ascii=False, indent=2)

    scored = f"the {split} split, {source}" if split else source
    print(f"{ckpt_path} (step {ckpt.get('iter_num')}) on {scored}: context {report['context']}, "
          f"stride {report['stride']}, {len(generations)} documents continued")
    for key, value in results.items():
        print(f"{key:<34}{value:>14.4f}" if isinstance(value, float) else f"{key:<34}{value!s:>14}")
    for name, signature in signatures.items():
        print(f"{name} signature: {signature}")
    print(f"report written to {report_path}")


if __name__ == "__main__":
    common.run(main)
