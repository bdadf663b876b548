"""
bpe.py tokenizers of several vocabulary sizes on held-out Persian text: bytes per token and
tokens per word, the table in REPORT.md.

    python bench/tokenizer_sizes.py                              # 2k .. 32k, a few minutes
    python bench/tokenizer_sizes.py --vocab_sizes=4096,8192

Every tokenizer learns from the documents that prepare.py puts in the training split of the
shared pre-training + fawiki corpus (cleaned, normalized, the same seed, val_fraction and
test_fraction as REPORT.md's prepare commands) and is measured on the test documents of each
domain apart: fawiki (what the fine-tuned model is judged on), news and poetry. Words are
whitespace-separated.
"""

import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bench_bpe  # noqa: E402
import bpe  # noqa: E402
import common  # noqa: E402
import prepare  # noqa: E402

SHARED = os.environ.get("SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
DEFAULTS = dict(
    vocab_sizes="2048,4096,8192,16384,32768",  # comma-separated
    val_fraction=0.05,  # as in REPORT.md's prepare commands
    test_fraction=0.05,  # the documents measured
    seed=1337,
    num_proc=2,  # worker processes for training and encoding
    out=os.path.join(ROOT, "bench", "results", "tokenizer_sizes.json"),  # figures as JSON; "" writes none
)
DOMAINS = {  # domain -> its inputs under ../shared/data
    "fawiki": ["fawiki/fawiki-sample-pages-articles.xml.bz2", "fawiki/fawiki-bio-paragraphs.jsonl"],
    "news": ["persian/news.jsonl"],
    "poetry": ["persian/poems.jsonl"],
}


def split_documents(config):
    """(training documents of all domains, {domain: its test documents})."""
    train, heldout = [], {}
    for domain, files in DOMAINS.items():
        documents = [doc for name in files for doc in
                     prepare.iter_documents(os.path.join(SHARED, name), min_chars=prepare.DEFAULTS["min_chars"])]
        keys = np.array([prepare.split_key(config["seed"], doc) for doc in documents])
        split = prepare.choose_splits(keys, config["val_fraction"], config["test_fraction"])
        train += [doc for doc, where in zip(documents, split) if prepare.SPLITS[where] == "train"]
        heldout[domain] = [doc for doc, where in zip(documents, split) if prepare.SPLITS[where] == "test"]
    return train, heldout


def main():
    config, _ = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    missing = [name for files in DOMAINS.values() for name in files if not os.path.isfile(os.path.join(SHARED, name))]
    if missing:
        raise common.UsageError(f"shared data missing: {', '.join(missing)} (set SHARED_DATA)")
    train, heldout = split_documents(config)
    print(f"training text: {len(train):,} documents, {sum(len(d.encode()) for d in train) / 1e6:.1f} MB; test: "
          + ", ".join(f"{domain} {len(docs):,} documents" for domain, docs in heldout.items()))
    rows = []
    for vocab_size in map(int, config["vocab_sizes"].split(",")):
        start = time.perf_counter()
        tokenizer = bpe.Tokenizer.train(train, vocab_size, num_proc=config["num_proc"])
        row = {"vocab_size": vocab_size, "train_s": time.perf_counter() - start}
        for domain, documents in heldout.items():
            tokens = sum(map(len, bench_bpe.encode_in_processes(tokenizer, documents, config["num_proc"])))
            row[domain] = {"bytes_per_token": sum(len(d.encode()) for d in documents) / tokens,
                           "tokens_per_word": tokens / sum(len(d.split()) for d in documents)}
        rows.append(row)
        print(f"vocab {vocab_size:>6,}: trained in {row['train_s']:5.1f} s; "
              + "; ".join(f"{domain} {row[domain]['bytes_per_token']:.2f} bytes/token, "
                          f"{row[domain]['tokens_per_word']:.2f} tokens/word" for domain in heldout), flush=True)
    if config["out"]:
        os.makedirs(os.path.dirname(config["out"]), exist_ok=True)
        with common.atomic_path(config["out"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"config": config, "results": rows}, f, indent=2)


if __name__ == "__main__":
    common.run(main)
