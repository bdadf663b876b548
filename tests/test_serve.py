"""serve.py: the API in-process through TestClient, then serve.py as a process on loopback
(the official openai client, concurrent requests, clients that hang up)."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi", reason="the serving extra is not installed: pip install -r requirements-serve.txt")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx: pip install -r requirements-dev.txt")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import sample  # noqa: E402
import serve  # noqa: E402
from bpe import Tokenizer  # noqa: E402
from conftest import ROOT  # noqa: E402
from model import GPT, GPTConfig, load_checkpoint  # noqa: E402

PERSIAN = [
    "کتابخانهٔ مرکزی شهر هر روز از ساعت هشت صبح باز است.",
    "باران پاییزی روی شیشه‌های پنجره می‌بارید و کوچه خیس بود.",
    "دانشجویان برای امتحان ریاضی تا نیمه‌شب درس خواندند.",
    "رود زاینده‌رود از میان اصفهان می‌گذرد و سی‌وسه‌پل بر آن است.",
]
PROMPT = "شهر اصفهان"


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(PERSIAN * 3, vocab_size=320)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=24, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32)).eval()


@pytest.fixture(scope="module")
def client(model, tokenizer):
    return TestClient(serve.create_app(model, tokenizer, "tiny-fa"))


def expected(model, tokenizer, prompt=PROMPT, seed=0, max_tokens=16, **settings):
    """(text, prompt token count, new ids): what sample.py generates for the same request."""
    _, prompt_ids = sample.encode_prompt(prompt, tokenizer, model.config.block_size)
    new_ids = list(sample.generate(model, prompt_ids, max_tokens, generator=torch.Generator().manual_seed(seed),
                                   stop_ids=(tokenizer.eot_id,), **settings))
    return tokenizer.decode(new_ids), len(prompt_ids), new_ids


def read_events(lines):
    """The JSON chunks of an SSE stream, checking its framing on the way."""
    lines = [line for line in lines if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: "):]) for line in lines[:-1]]


def streamed_choices(chunks):
    """{index: (text, finish_reason)} from a stream's chunks; only a choice's last chunk may finish it."""
    choices = {}
    for chunk in chunks:
        assert chunk["object"] == "text_completion" and chunk["id"] == chunks[0]["id"]
        for choice in chunk["choices"]:
            text, finish_reason = choices.get(choice["index"], ("", None))
            assert finish_reason is None and choice["logprobs"] is None
            choices[choice["index"]] = (text + choice["text"], choice["finish_reason"])
    return choices


# -----------------------------------------------------------------------------
# the API in-process

@pytest.mark.parametrize("settings", [{}, dict(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3)])
def test_completion_is_sample_generation(client, model, tokenizer, settings):
    response = client.post("/v1/completions", json=dict(model="tiny-fa", prompt=PROMPT, max_tokens=12, seed=3,
                                                        **settings))
    assert response.status_code == 200
    body = response.json()
    text, prompt_tokens, new_ids = expected(model, tokenizer, seed=3, max_tokens=12, **settings)
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == "tiny-fa"
    assert body["choices"] == [dict(text=text, index=0, logprobs=None,
                                    finish_reason="length" if len(new_ids) == 12 else "stop")]
    assert body["usage"] == dict(prompt_tokens=prompt_tokens, completion_tokens=len(new_ids),
                                 total_tokens=prompt_tokens + len(new_ids))


@pytest.mark.parametrize("field, value", [
    ("max_tokens", 0), ("max_tokens", serve.MAX_TOKENS + 1), ("max_tokens", "ten"),
    ("temperature", 0), ("temperature", -0.5), ("temperature", 2.5),
    ("top_p", 0), ("top_p", 1.01), ("top_k", -1), ("repetition_penalty", 0),
    ("n", 0), ("n", serve.MAX_CHOICES + 1), ("seed", -1), ("stream", "yes"),
    ("prompt", "ا" * (serve.MAX_PROMPT_CHARS + 1)), ("prompt", ["یک", "دو"]), ("prompt", [[1, 2, 3]]),
    ("stop", ""), ("stop", ["a", "b", "c", "d", "e"]), ("stop", 7),
    ("logprobs", 2), ("echo", True), ("temprature", 0.5),
])
def test_invalid_field_is_a_422_naming_it(client, field, value):
    response = client.post("/v1/completions", json={"prompt": PROMPT, field: value})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"].split(".")[0] == field and error["message"].startswith(field)


def test_unknown_model_is_a_404(client):
    response = client.post("/v1/completions", json=dict(model="gpt-4", prompt=PROMPT))
    assert response.status_code == 404 and "tiny-fa" in response.json()["error"]["message"]


def test_stream_equals_non_stream_for_the_same_seed(client):
    request = dict(prompt=[PROMPT], max_tokens=20, n=2, seed=11, temperature=0.9)
    whole = client.post("/v1/completions", json=request).json()
    with client.stream("POST", "/v1/completions",
                       json=dict(request, stream=True, stream_options=dict(include_usage=True))) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        chunks = read_events(response.iter_lines())
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert streamed_choices(chunks) == {c["index"]: (c["text"], c["finish_reason"]) for c in whole["choices"]}
    assert len(chunks) > 4  # token by token, not one chunk per choice


def test_n_choices_use_consecutive_seeds(client, model, tokenizer):
    body = client.post("/v1/completions", json=dict(prompt=PROMPT, max_tokens=10, n=3, seed=5)).json()
    runs = [expected(model, tokenizer, seed=5 + i, max_tokens=10) for i in range(3)]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["text"] for c in body["choices"]] == [text for text, _, _ in runs]
    assert body["usage"]["completion_tokens"] == sum(len(ids) for _, _, ids in runs)


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence_ends_the_text_before_it(client, model, tokenizer, stream):
    text, _, _ = expected(model, tokenizer, seed=2, max_tokens=30)
    stop = text[6:8]
    assert len(stop) == 2  # the unconstrained text is long enough to pick a stop sequence from
    request = dict(prompt=PROMPT, max_tokens=30, seed=2, stop=["نامحتمل‌ترین", stop], stream=stream)
    if stream:
        with client.stream("POST", "/v1/completions", json=request) as response:
            chunks = read_events(response.iter_lines())
        assert not any(stop in c["choices"][0]["text"] for c in chunks)
        (got, finish_reason), = streamed_choices(chunks).values()
    else:
        choice, = client.post("/v1/completions", json=request).json()["choices"]
        got, finish_reason = choice["text"], choice["finish_reason"]
    assert (got, finish_reason) == (text[:text.index(stop)], "stop")


@pytest.mark.parametrize("text, stops, result", [
    ("abc", ["x"], ("abc", "", False)),
    ("abcd", ["cde"], ("ab", "cd", False)),  # "cd" may still become "cde"
    ("abcdef", ["cd", "b"], ("a", "", True)),  # the earliest stop wins
    ("سلام دنیا", ["دنیای"], ("سلام ", "دنیا", False)),
])
def test_cut_at_stop(text, stops, result):
    assert serve.cut_at_stop(text, stops) == result


def test_prompt_longer_than_the_context_is_cropped(client, model, tokenizer):
    long_prompt = " ".join(PERSIAN * 2)
    body = client.post("/v1/completions", json=dict(prompt=long_prompt, max_tokens=8, seed=1)).json()
    text, prompt_tokens, _ = expected(model, tokenizer, long_prompt, seed=1, max_tokens=8)
    assert body["usage"]["prompt_tokens"] == prompt_tokens == model.config.block_size
    assert body["choices"][0]["text"] == text


def test_health_models_and_page(client, model, tokenizer):
    health = client.get("/health").json()
    assert health["model"] == "tiny-fa" and health["device"] == "cpu"
    assert health["parameters"] == model.num_params() and health["vocab_size"] == tokenizer.vocab_size
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-fa"
    assert "/v1/completions" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needle in ['dir="rtl"', 'lang="fa"', "Vazirmatn", 'id="temperature"', 'id="top_p"', 'id="top_k"',
                   'id="max_tokens"', 'id="repetition_penalty"', "getReader"]:
        assert needle in page.text


# -----------------------------------------------------------------------------
# serve.py as a process, over loopback

def run_serve(*args, prelude="pass"):
    """Run serve.py as a script, after `prelude` (Python code) has run in the same interpreter."""
    code = f"import runpy, sys\n{prelude}\nsys.argv = ['serve.py', *{list(args)!r}]\n" \
           f"runpy.run_path('serve.py', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("prelude, expected_text", [
    ("pass", "ckpt.pt"), ("sys.modules['fastapi'] = None", "pip install -r requirements-serve.txt")])
def test_startup_problems_are_one_line_errors(tmp_path, prelude, expected_text):
    result = run_serve(f"--out_dir={tmp_path}", prelude=prelude)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ") and expected_text in result.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokenizer):
    """serve.py on a free loopback port, serving a tiny checkpoint; yields (base url, checkpoint path)."""
    torch.manual_seed(1)
    tiny = GPT(GPTConfig(block_size=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32,
                         pos_emb="learned"))
    tokenizer_json = tokenizer.to_json()
    out_dir = tmp_path_factory.mktemp("out-tiny")
    torch.save({"model_args": vars(tiny.config), "model": tiny.state_dict(), "tokenizer": tokenizer_json,
                "tokenizer_sha256": hashlib.sha256(tokenizer_json.encode()).hexdigest()}, out_dir / "ckpt.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # one PyTorch thread: on a busy CI machine a team of spinning OpenMP threads can slow a tiny
    # model's steps a hundredfold, and these tests are about behaviour, not speed
    process = subprocess.Popen([sys.executable, "serve.py", f"--out_dir={out_dir}", f"--port={port}"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"serve.py did not start: {process.stderr.read()}")
            time.sleep(0.2)
    yield url, str(out_dir / "ckpt.pt")
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def served_model(server):
    model, tokenizer, _ = load_checkpoint(server[1], "cpu")
    return model, tokenizer


def test_openai_client_completes_persian_streaming_and_not(server, served_model):
    openai = pytest.importorskip("openai", reason="the openai client is a test-only dependency")
    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)
    model_name = client.models.list().data[0].id
    assert model_name.startswith("out-tiny")
    request = dict(model=model_name, prompt="باران پاییزی", max_tokens=24, seed=9, temperature=0.8,
                   extra_body=dict(top_k=50, repetition_penalty=1.2))
    completion = client.completions.create(**request)
    stream = client.completions.create(stream=True, **request)
    pieces = [chunk.choices[0].text for chunk in stream if chunk.choices]
    text, prompt_tokens, new_ids = expected(*served_model, "باران پاییزی", seed=9, max_tokens=24,
                                            temperature=0.8, top_k=50, repetition_penalty=1.2)
    assert completion.choices[0].text == "".join(pieces) == text
    assert completion.usage.prompt_tokens == prompt_tokens and completion.usage.completion_tokens == len(new_ids)
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client.completions.create(model=model_name, prompt="باران", temperature=0)


def test_concurrent_requests_match_sequential_ones(server):
    url, _ = server
    requests = [dict(prompt=prompt, max_tokens=30, seed=seed, stream=seed % 2 == 0)
                for seed, prompt in enumerate(PERSIAN)]

    def complete(request):
        with httpx.stream("POST", f"{url}/v1/completions", json=request, timeout=60) as response:
            lines = list(response.iter_lines())
        if request["stream"]:
            return streamed_choices(read_events(lines))[0]
        choice = json.loads("".join(lines))["choices"][0]
        return choice["text"], choice["finish_reason"]

    sequential = [complete(request) for request in requests]
    concurrent = [None] * len(requests)

    def worker(i):
        concurrent[i] = complete(requests[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert concurrent == sequential


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_stops_generation(server, stream):
    url, _ = server
    request = dict(prompt=PROMPT, max_tokens=800, top_k=1, stream=stream)  # top_k=1: the same tokens every time
    uninterrupted = httpx.post(f"{url}/v1/completions", json=dict(request, stream=False), timeout=120).json()
    assert uninterrupted["usage"]["completion_tokens"] == 800  # no end of text before max_tokens

    def health():
        return httpx.get(f"{url}/health").json()

    before = health()["generated_tokens"]
    body = json.dumps(request).encode()
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as connection:
        connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 30
        while health()["generated_tokens"] - before < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
    # hung up while generating: the server must stop well short of the 800 tokens
    while (after := health())["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert after["active_requests"] == 0 and 20 <= after["generated_tokens"] - before < 400
