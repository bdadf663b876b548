"""
Load test for serve.py on loopback: 1, 4 and 8 concurrent clients in turn, each streaming
completions for a bounded time; a table of tokens per second, latency, time to first token and
failed requests, checked against serve.py's targets.

    python bench/bench_serve.py                                    # a tiny random model, ~1 minute
    python bench/bench_serve.py --out_dir=out-fawiki-small --seconds=60
    python bench/bench_serve.py --clients="[1, 16]" --seconds=3    # a quick check
    python bench/bench_serve.py --out_dir=out-fawiki-small --quantize=int8   # serve.py --quantize=int8
    python bench/bench_serve.py --n_layer=6 --n_head=6 --n_embd=384 --block_size=256 \
        --vocab_size=16384                                         # random weights, 16.9 M parameters

The server is started here, as `python serve.py` on a free 127.0.0.1 port with --max_batch as
large as the most clients, serving --out_dir or, when that is empty, a random model written
to a temporary folder (its text is noise; the tiny default shows the server's own overhead). Each
client sends one streamed request after another, each with its own seed, until the time or the
request budget of that level runs out. Latency is from sending the request to the end of the
stream; time to first token is to the first chunk holding text. serve.py decodes the requests
in flight together, one forward pass per step for all of them, so more clients should bring
more tokens per second; "mean batch" is the rows per step the server reports. The targets:
8 clients at least 4x the tokens per second of 1, p95 time to first token at most 250 ms, no
failed request. The server inherits this process's environment, so OMP_NUM_THREADS=1 python
bench/bench_serve.py measures a server running the model on one PyTorch thread.
"""

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common  # noqa: E402
from bpe import Tokenizer  # noqa: E402
from model import GPT, GPTConfig, tokenizer_hash  # noqa: E402

DEFAULTS = {
    "out_dir": "",  # checkpoint folder to serve; empty = a random model of the shape below
    # the random model: one tiny layer by default (its speed shows the server's own overhead);
    # larger shapes take a tokenizer trained on ../shared/data/persian/news.jsonl
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 64,
    "block_size": 128,
    "vocab_size": 360,
    "clients": [1, 4, 8],  # concurrency levels, measured in turn against one server
    "seconds": 20.0,  # how long the clients of each level keep sending new requests
    "max_requests": 400,  # per level: stop sending earlier once this many have been sent
    "max_tokens": 64,  # tokens asked for per completion
    "prompt": "تهران بزرگ‌ترین شهر ایران است و",
    "temperature": 0.8,
    "top_k": 200,
    "device": "auto",  # where serve.py runs the model
    "quantize": "none",  # serve.py --quantize: "int8" serves int8 weights (CPU only)
    "threads": 1,  # serve.py --threads: PyTorch threads for the model (0 = one per core)
    "out": os.path.join(ROOT, "bench", "results", "serve.json"),  # figures as JSON; "" writes none
}
NEWS = os.path.join(ROOT, "..", "shared", "data", "persian", "news.jsonl")
TINY_TEXTS = [  # a random model of the default vocabulary size gets a tokenizer trained on these lines
    "تهران بزرگ‌ترین شهر ایران است و در دامنهٔ البرز قرار دارد.",
    "شاعران بسیاری در شیراز زندگی کرده‌اند؛ سعدی و حافظ از آن جمله‌اند.",
    "دریای خزر در شمال ایران و خلیج فارس در جنوب آن است.",
]


def write_random_checkpoint(out_dir, config):
    """A model of random weights and config's shape, saved as train.py saves, with a tokenizer of
    its vocabulary size: trained on TINY_TEXTS at the default size, on Persian news above it."""
    if config["vocab_size"] <= DEFAULTS["vocab_size"]:
        texts = TINY_TEXTS * 4
    else:
        if not os.path.isfile(NEWS):
            raise common.UsageError(f"a vocabulary of {config['vocab_size']} needs {NEWS} to train its tokenizer")
        with open(NEWS, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
    tokenizer = Tokenizer.train(texts, vocab_size=config["vocab_size"])
    if tokenizer.vocab_size != config["vocab_size"]:
        raise common.UsageError(f"the tokenizer text holds only {tokenizer.vocab_size} ids, not {config['vocab_size']}")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{key: config[key] for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")}))
    tokenizer_json = tokenizer.to_json()
    torch.save({"model_args": vars(model.config), "model": model.state_dict(), "tokenizer": tokenizer_json,
                "tokenizer_sha256": tokenizer_hash(tokenizer_json)},
               os.path.join(out_dir, "ckpt.pt"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(out_dir, device="auto", max_batch=16, quantize="none", startup_seconds=120, shape=None,
                   threads=1):
    """Yield the base URL of serve.py serving out_dir (or a random model of `shape`, a dict like
    DEFAULTS, tiny when None) on loopback."""
    with tempfile.TemporaryDirectory() as tmp:
        if not out_dir:
            out_dir = os.path.join(tmp, "random")
            os.makedirs(out_dir)
            write_random_checkpoint(out_dir, shape or DEFAULTS)
        port = free_port()
        with open(os.path.join(tmp, "serve.log"), "w+", encoding="utf-8") as log:
            server = subprocess.Popen([sys.executable, os.path.join(ROOT, "serve.py"), f"--out_dir={out_dir}",
                                       f"--port={port}", f"--device={device}", f"--max_batch={max_batch}",
                                       f"--quantize={quantize}", f"--threads={threads}"],
                                      stdout=log, stderr=log)
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + startup_seconds
                while not healthy(url):
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise common.UsageError(f"serve.py did not start: {log.read().strip()[-500:]}")
                    time.sleep(0.2)
                yield url
            finally:
                server.terminate()
                server.wait(timeout=30)


def healthy(url):
    try:
        return health(url) is not None
    except OSError:
        return False


def health(url):
    with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
        return json.load(response)


def streamed_completion(url, body, timeout=300):
    """(seconds to the first text, seconds to the end, completion tokens) of one streamed request."""
    request = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    first_text = tokens = None
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for line in response:
            line = line.decode("utf-8").strip()
            if not line:
                continue
            if line == "data: [DONE]":
                return first_text, time.perf_counter() - started, tokens
            chunk = json.loads(line.removeprefix("data: "))
            if first_text is None and any(choice["text"] for choice in chunk["choices"]):
                first_text = time.perf_counter() - started
            tokens = chunk["usage"]["completion_tokens"] if chunk.get("usage") else None
    raise ValueError("the stream ended without data: [DONE]")


def load_test(url, config, clients):
    """Run `clients` clients; return one dict per request: ttft, latency, tokens, or error."""
    numbers = itertools.count()
    results, lock = [], threading.Lock()
    deadline = time.monotonic() + config["seconds"]

    def client():
        while time.monotonic() < deadline:
            with lock:
                number = next(numbers)
            if number >= config["max_requests"]:
                return
            body = dict(prompt=config["prompt"], max_tokens=config["max_tokens"], seed=number, stream=True,
                        temperature=config["temperature"], top_k=config["top_k"],
                        stream_options=dict(include_usage=True))
            try:
                ttft, latency, tokens = streamed_completion(url, body)
                result = dict(ttft=ttft, latency=latency, tokens=tokens)
            except Exception as e:  # whatever went wrong, the request failed and the test goes on
                result = dict(error=f"{type(e).__name__}: {e}")
            with lock:
                results.append(result)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def summarize(results, seconds, steps):
    ok = [r for r in results if "error" not in r]
    latency = np.array([r["latency"] for r in ok])
    ttft = np.array([r["ttft"] for r in ok if r["ttft"] is not None])
    tokens = sum(r["tokens"] for r in ok)

    def ms(values, q):
        return round(float(np.percentile(values, q)) * 1000, 1) if len(values) else None

    return dict(requests=len(results), failed=len(results) - len(ok), wall_seconds=round(seconds, 2),
                requests_per_second=round(len(ok) / seconds, 2), tokens_per_second=round(tokens / seconds, 1),
                latency_p50_ms=ms(latency, 50), latency_p95_ms=ms(latency, 95),
                ttft_p50_ms=ms(ttft, 50), ttft_p95_ms=ms(ttft, 95), mean_batch=round(steps[0] / max(steps[1], 1), 2),
                errors=sorted({r["error"] for r in results if "error" in r})[:5])


COLUMNS = [("clients", "clients"), ("requests", "requests"), ("failed", "failed"), ("tokens/s", "tokens_per_second"),
           ("latency p50 ms", "latency_p50_ms"), ("p95", "latency_p95_ms"), ("TTFT p50 ms", "ttft_p50_ms"),
           ("p95", "ttft_p95_ms"), ("mean batch", "mean_batch")]


def targets(levels):
    """(description, met) of each target that the measured levels allow checking."""
    by_clients = {level["clients"]: level for level in levels}
    checks = [(f"no failed request ({sum(level['failed'] for level in levels)} failed)",
               all(level["failed"] == 0 for level in levels))]
    if 1 in by_clients and 8 in by_clients:
        ratio = by_clients[8]["tokens_per_second"] / max(by_clients[1]["tokens_per_second"], 1e-9)
        checks.append((f"8 clients >= 4x the tokens/s of 1 ({ratio:.1f}x)", ratio >= 4))
    if 8 in by_clients and by_clients[8]["ttft_p95_ms"] is not None:
        checks.append((f"p95 time to first token at 8 clients <= 250 ms ({by_clients[8]['ttft_p95_ms']:.0f} ms)",
                       by_clients[8]["ttft_p95_ms"] <= 250))
    return checks


def main(argv=None):
    config, positional = common.configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if positional:
        raise common.UsageError(f"unexpected argument {positional[0]!r} (use --key=value)")
    clients = config["clients"]
    if not clients or any(not isinstance(c, int) or c < 1 for c in clients):
        raise common.UsageError(f"clients must be a list of positive integers, got {clients!r}")
    if config["max_requests"] < 1 or config["seconds"] <= 0:
        raise common.UsageError("max_requests must be >= 1 and seconds > 0")
    levels = []
    with running_server(config["out_dir"], config["device"], max(clients), config["quantize"], shape=config,
                        threads=config["threads"]) as url:
        about = health(url)
        streamed_completion(url, dict(prompt=config["prompt"], max_tokens=4, stream=True))  # warm-up
        for count in clients:
            before, started = health(url), time.perf_counter()
            results = load_test(url, config, count)
            seconds, after = time.perf_counter() - started, health(url)
            steps = [after[key] - before[key] for key in ("generated_tokens", "decode_steps")]
            levels.append(dict(clients=count, **summarize(results, seconds, steps)))
    report = dict(model=about["model"], parameters=about["parameters"], device=about["device"],
                  max_tokens=config["max_tokens"], seconds_per_level=config["seconds"], levels=levels)
    report["targets"] = [dict(target=text, met=met) for text, met in targets(levels)]
    print(f"{report['model']} ({report['parameters']:,} parameters, {report['device']}), "
          f"{report['max_tokens']} tokens per request, {config['seconds']:g} s per level")
    widths = [max(len(title), 7) for title, _ in COLUMNS]
    print(" | ".join(f"{title:>{width}}" for (title, _), width in zip(COLUMNS, widths)))
    for level in levels:
        print(" | ".join(f"{level[key] if level[key] is not None else '-':>{width}}"
                         for (_, key), width in zip(COLUMNS, widths)))
    for target in report["targets"]:
        print(f"  [{'met' if target['met'] else 'NOT met'}] {target['target']}")
    if config["out"]:
        with common.atomic_path(config["out"]) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(report, f, ensure_ascii=False, indent=2)
        print(f"wrote {config['out']}")
    failed = sum(level["failed"] for level in levels)
    if failed:
        errors = sorted({e for level in levels for e in level["errors"]})[:5]
        sys.exit(f"error: {failed} of {sum(level['requests'] for level in levels)} requests failed: {errors}")


if __name__ == "__main__":
    common.run(main)
