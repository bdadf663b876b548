"""
bpe.py against Hugging Face `tokenizers` (a byte-level BPE written in Rust), side by side:
training wall time, encode throughput, bytes per token on held-out text, peak memory.

    python bench/bench_bpe.py                  # the full Persian corpus (~67 MB), a few minutes
    python bench/bench_bpe.py --max_mb=4       # a quick check that everything runs

Both learn the same vocabulary size from the same raw `text` fields of the JSONL files (no
normalization, so both see e.g. Arabic ي/ك beside Persian ی/ک), with the same number of
workers: processes for bpe.py, threads (RAYON_NUM_THREADS) for HF. Every `heldout_every`-th
document is kept out of training and only used to measure bytes per token. Each tokenizer
runs in its own child process so that its peak memory can be read from getrusage; the
corpus held in memory counts in both (the "after loading" figure).
HF `tokenizers` is a benchmark peer only (`pip install tokenizers`); without it, only
bpe.py is measured.
"""

import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bpe  # noqa: E402
import common  # noqa: E402

DEFAULTS = dict(
    data_dir=os.environ.get("SHARED_DATA", os.path.join(ROOT, "..", "shared", "data")),  # real text
    files="persian/news.jsonl,persian/poems.jsonl,fawiki/fawiki-bio-paragraphs.jsonl",  # under data_dir
    vocab_size=16384,  # the same for both tokenizers
    num_proc=2,  # worker processes (ours) and threads (HF)
    heldout_every=20,  # every 20th document is held out from training
    max_mb=0.0,  # read at most this many MB of each file; 0 reads everything
    out=os.path.join(ROOT, "bench", "results", "bpe.json"),  # figures as JSON; "" writes none
    peer="",  # internal: which tokenizer a child process measures (ours or hf)
)


def data_paths(config):
    paths = [os.path.join(config["data_dir"], name) for name in config["files"].split(",")]
    for path in paths:
        if not os.path.isfile(path):
            raise common.UsageError(f"data file not found: {path} (set --data_dir)")
    return paths


def load_corpus(config):
    """Documents of every file, split into (train, heldout)."""
    train, heldout, count = [], [], 0
    for path in data_paths(config):
        size = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line)["text"]
                (heldout if count % config["heldout_every"] == config["heldout_every"] - 1 else train).append(text)
                count += 1
                size += len(line.encode("utf-8"))
                if config["max_mb"] and size >= config["max_mb"] * 1e6:
                    break
    return train, heldout


def megabytes(texts):
    return sum(len(text.encode("utf-8")) for text in texts) / 1e6


def peak_rss_mb(who):
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


worker_tokenizer = None  # in a worker process of encode_in_processes: its own copy of the tokenizer


def start_encoder(tokenizer_json):
    global worker_tokenizer
    worker_tokenizer = bpe.Tokenizer.from_json(tokenizer_json)


def encode_text(text):
    return worker_tokenizer.encode_array(text)


def encode_in_processes(tok, texts, num_proc):
    """The ids of each text, encoded by num_proc worker processes: bpe.py's peer of HF's encode_batch
    on num_proc threads. Each worker keeps its tokenizer, and so its caches, for all of its texts."""
    with multiprocessing.Pool(num_proc, start_encoder, (tok.to_json(),)) as pool:
        return pool.map(encode_text, texts, chunksize=max(1, len(texts) // (16 * num_proc)))


def measure_ours(config, train, heldout):
    start = time.perf_counter()
    tok = bpe.Tokenizer.train(iter(train), config["vocab_size"], num_proc=config["num_proc"])
    train_s = time.perf_counter() - start
    heldout_tokens = sum(map(len, encode_in_processes(tok, heldout, config["num_proc"])))
    start = time.perf_counter()
    encode_in_processes(tok, train + heldout, config["num_proc"])
    encode_s = time.perf_counter() - start
    return tok.vocab_size, train_s, encode_s, heldout_tokens


def hf_bpe(vocab_size):
    """(tokenizer, trainer): HF tokenizers' byte-level BPE, the peer of bpe.py in every benchmark."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[bpe.EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    return tok, trainer


def hf_env(num_proc):
    """The environment that gives HF tokenizers num_proc threads, as bpe.py gets num_proc processes."""
    return dict(os.environ, RAYON_NUM_THREADS=str(num_proc), TOKENIZERS_PARALLELISM="true")


def measure_hf(config, train, heldout):
    tok, trainer = hf_bpe(config["vocab_size"])
    start = time.perf_counter()
    tok.train_from_iterator(train, trainer, length=len(train))
    train_s = time.perf_counter() - start
    heldout_tokens = sum(len(e.ids) for e in tok.encode_batch(heldout))
    start = time.perf_counter()
    tok.encode_batch(train + heldout)
    encode_s = time.perf_counter() - start
    return tok.get_vocab_size(), train_s, encode_s, heldout_tokens


def child(config):
    """Measure one tokenizer and print its figures as one JSON line."""
    train, heldout = load_corpus(config)
    loaded_mb = peak_rss_mb(resource.RUSAGE_SELF)
    measure = measure_ours if config["peer"] == "ours" else measure_hf
    vocab_size, train_s, encode_s, heldout_tokens = measure(config, train, heldout)
    print(json.dumps(dict(
        vocab_size=vocab_size, train_s=train_s, encode_mb_s=megabytes(train + heldout) / encode_s,
        heldout_bytes_per_token=megabytes(heldout) * 1e6 / heldout_tokens,
        rss_loaded_mb=loaded_mb, peak_rss_mb=peak_rss_mb(resource.RUSAGE_SELF),
        peak_rss_worker_mb=peak_rss_mb(resource.RUSAGE_CHILDREN),
        train_mb=megabytes(train), heldout_mb=megabytes(heldout))))


def run_child(config, peer):
    argv = [sys.executable, os.path.abspath(__file__), f"--peer={peer}"]
    argv += [f"--{key}={value}" for key, value in config.items() if key not in ("peer", "out")]
    result = subprocess.run(argv, stdout=subprocess.PIPE, env=hf_env(config["num_proc"]), text=True)
    if result.returncode != 0:
        raise common.UsageError(f"the {peer} measurement failed (exit code {result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    config, _ = common.configure(DEFAULTS, sys.argv[1:], config_files=False)
    if config["peer"]:
        return child(config)
    data_paths(config)
    results = {"ours": run_child(config, "ours")}
    try:
        import tokenizers
        results["hf"] = run_child(config, "hf")
        hf_name = f"HF tokenizers {tokenizers.__version__}"
    except ImportError:
        print("HF tokenizers is not installed (pip install tokenizers): measuring bpe.py alone")
    ours, hf = results["ours"], results.get("hf")
    print(f"corpus: {ours['train_mb']:.1f} MB for training, {ours['heldout_mb']:.1f} MB held out; "
          f"vocab {config['vocab_size']}, {config['num_proc']} workers")
    rows = [("vocab size", "vocab_size", "{:.0f}", None),
            ("training wall time (s)", "train_s", "{:.1f}", "ours/HF {:.2f}x (target <= 4x)"),
            ("encode throughput (MB/s)", "encode_mb_s", "{:.2f}", "ours/HF {:.2f}x (target >= 0.5x)"),
            ("held-out bytes per token", "heldout_bytes_per_token", "{:.3f}", "ours/HF {:.3f} (target >= 1)"),
            ("RSS after loading text (MB)", "rss_loaded_mb", "{:.0f}", None),
            ("peak RSS, main process (MB)", "peak_rss_mb", "{:.0f}", None),
            ("peak RSS, largest worker (MB)", "peak_rss_worker_mb", "{:.0f}", None)]
    print(f"{'':32}{'bpe.py':>12}{hf_name if hf else '':>28}")
    for label, key, fmt, ratio in rows:
        line = f"{label:32}{fmt.format(ours[key]):>12}"
        if hf:
            line += f"{fmt.format(hf[key]):>28}"
            if ratio:
                line += "   " + ratio.format(ours[key] / hf[key])
        print(line)
    if config["out"]:
        with common.atomic_path(config["out"]) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(dict(config=config, results=results), f, indent=1)
        print(f"figures written to {config['out']}")


if __name__ == "__main__":
    common.run(main)
