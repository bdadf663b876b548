"""serve.py: the API in-process through TestClient, then serve.py as a process on loopback
(the official openai client, concurrent requests batched together, a full queue, clients that
hang up)."""
import asyncio
import copy
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
from eval import token_nll  # noqa: E402
from model import GPT, GPTConfig, load_checkpoint, quantize_weights, tokenizer_hash  # noqa: E402

PERSIAN = [
    "کتابخانهٔ مرکزی شهر هر روز از ساعت هشت صبح باز است.",
    "باران پاییزی روی شیشه‌های پنجره می‌بارید و کوچه خیس بود.",
    "دانشجویان برای امتحان ریاضی تا نیمه‌شب درس خواندند.",
    "رود زاینده‌رود از میان اصفهان می‌گذرد و سی‌وسه‌پل بر آن است.",
]
PROMPT = "شهر اصفهان"
SAMPLING = dict(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3)


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


@pytest.fixture(scope="module")
def normalizing(tokenizer):
    """The tokenizer's merges, with prepare.py's normalization recorded (the other one has none)."""
    return Tokenizer(tokenizer.merges, normalization=dict(normalize_text=True, remove_diacritics=True))


@pytest.fixture(scope="module")
def normalizing_client(model, normalizing):
    return TestClient(serve.create_app(model, normalizing, "tiny-fa"))


def expected(model, tokenizer, prompt=PROMPT, seed=0, max_tokens=16, **settings):
    """(text, prompt ids, new ids): what sample.py generates alone for the same request."""
    _, prompt_ids = sample.encode_prompt(prompt, tokenizer, model.config.block_size)
    new_ids = list(sample.generate(model, prompt_ids, max_tokens, generator=torch.Generator().manual_seed(seed),
                                   stop_ids=(tokenizer.eot_id,), **settings))
    return tokenizer.decode(new_ids), prompt_ids, new_ids


def decoder_text(model, tokenizer, prompt=PROMPT, seed=0, max_tokens=16, **settings):
    """The text one sample.Decoder row generates with these settings (else the API's defaults), as
    each row of the server's batch does."""
    _, prompt_ids = sample.encode_prompt(prompt, tokenizer, model.config.block_size)
    decoder = sample.Decoder(model, 1)
    decoder.add(prompt_ids, **dict(dict(temperature=1.0, top_k=0, top_p=1.0), **settings), max_new_tokens=max_tokens,
                generator=torch.Generator().manual_seed(seed), stop_ids=(tokenizer.eot_id,))
    new_ids = []
    while len(decoder):
        new_ids += [token for _, token, *_ in decoder.step() if token is not None]
    return tokenizer.decode(new_ids)


def completion(client, **request):
    """The one choice of a completion request that must succeed."""
    response = client.post("/v1/completions", json=request)
    assert response.status_code == 200, response.text
    choice, = response.json()["choices"]
    return choice


def read_events(lines):
    """The JSON chunks of an SSE stream, checking its framing on the way."""
    lines = [line for line in lines if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: "):]) for line in lines[:-1]]


def streamed_choices(chunks):
    """{index: (text, finish_reason, logprobs)} from a stream's chunks, the chunks' logprobs
    joined; only a choice's last chunk may finish it."""
    choices = {}
    for chunk in chunks:
        assert chunk["object"] == "text_completion" and chunk["id"] == chunks[0]["id"]
        for choice in chunk["choices"]:
            text, finish_reason, logprobs = choices.get(choice["index"], ("", None, None))
            assert finish_reason is None
            if choice["logprobs"] is not None:
                logprobs = {key: (logprobs or {}).get(key, []) + value for key, value in choice["logprobs"].items()}
            choices[choice["index"]] = (text + choice["text"], choice["finish_reason"], logprobs)
    return choices


def check_logprobs(choice, num_tokens):
    """The logprobs object describes the choice's text token by token."""
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == num_tokens and "".join(logprobs["tokens"]) == choice["text"]
    assert logprobs["text_offset"] == [len("".join(logprobs["tokens"][:i])) for i in range(num_tokens)]
    for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]):
        if logprob is not None:  # the chosen token, under its own text, and the best
            assert top[token] == logprob and all(value <= 0 for value in top.values())


# -----------------------------------------------------------------------------
# the API in-process

@pytest.mark.parametrize("settings", [{}, SAMPLING, dict(temperature=0)])
def test_completion_is_sample_generation(client, model, tokenizer, settings):
    response = client.post("/v1/completions", json=dict(model="tiny-fa", prompt=PROMPT, max_tokens=12, seed=3,
                                                        **settings))
    assert response.status_code == 200
    body = response.json()
    sample_settings = dict(settings, greedy=True) if settings.get("temperature") == 0 else settings
    text, prompt_ids, new_ids = expected(model, tokenizer, seed=3, max_tokens=12, **sample_settings)
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == "tiny-fa"
    assert body["choices"] == [dict(text=text, index=0, logprobs=None,
                                    finish_reason="length" if len(new_ids) == 12 else "stop")]
    assert body["usage"] == dict(prompt_tokens=len(prompt_ids), completion_tokens=len(new_ids),
                                 total_tokens=len(prompt_ids) + len(new_ids))


@pytest.mark.parametrize("field, value", [
    ("max_tokens", -1), ("max_tokens", serve.MAX_TOKENS + 1), ("max_tokens", "ten"),
    ("temperature", -0.5), ("temperature", 2.5), ("top_p", 0), ("top_p", 1.01), ("top_k", -1),
    ("repetition_penalty", 0), ("n", 0), ("n", serve.MAX_CHOICES + 1), ("seed", -1), ("stream", "yes"),
    ("prompt", "ا" * (serve.MAX_PROMPT_LENGTH + 1)), ("prompt", []), ("prompt", [[]]), ("prompt", [[1, -2]]),
    ("prompt", [1.5]), ("prompt", [[1, "a"]]), ("prompt", [10**6]),
    ("prompt", ["یک"] * (serve.MAX_PROMPTS + 1)), ("stop", ""), ("stop", ["a", "b", "c", "d", "e"]), ("stop", 7),
    ("logprobs", -1), ("logprobs", serve.MAX_LOGPROBS + 1), ("echo", "yes"), ("suffix", "x"), ("temprature", 0.5),
    ("frequency_penalty", 2.5), ("presence_penalty", -2.1), ("presence_penalty", "0"), ("logit_bias", {"5": 101}),
    ("logit_bias", {"5": -100.5}), ("logit_bias", {"x": 1}), ("logit_bias", {"-1": 1}), ("logit_bias", {"320": 1}),
    ("logit_bias", [5]), ("logit_bias", {str(i): 1 for i in range(serve.MAX_LOGIT_BIAS + 1)}), ("best_of", 2),
    ("best_of", 0), ("user", 7), ("stream_options", {"include_usge": True}), ("a" * 5000, 1),
])
def test_invalid_field_is_a_400_naming_it(client, field, value):
    response = client.post("/v1/completions", json={"prompt": PROMPT, field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}
    assert error["param"].split(".")[0] == serve.clipped(field) and error["message"].startswith(serve.clipped(field))
    assert len(error["message"]) < 200  # a client's string is quoted cut short


@pytest.mark.parametrize("path, content, status, needle", [
    ("/v1/completions", b'{"prompt": "x",', 400, "not valid JSON"),
    ("/v1/completions", b'["x"]', 400, "body"),
    ("/v1/completions", b"", 400, "body"),
    ("/v1/completions", b"{prompt}", 400, "not valid JSON"),
    ("/v1/chat/completions", b"{}", 404, "Not Found"),
])
def test_malformed_requests_get_openai_errors_never_422(client, path, content, status, needle):
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status and needle in response.json()["error"]["message"]
    wrong_method = client.get("/v1/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_too_many_rows_and_unknown_model_are_refused(client):
    too_many = client.post("/v1/completions", json=dict(prompt=["یک", "دو", "سه"], n=serve.MAX_CHOICES))
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"
    response = client.post("/v1/completions", json=dict(model="gpt-4", prompt=PROMPT))
    assert response.status_code == 404 and "tiny-fa" in response.json()["error"]["message"]
    long_name = client.post("/v1/completions", json=dict(model="gpt-4" + "x" * 100_000, prompt=PROMPT))
    message = long_name.json()["error"]["message"]
    assert long_name.status_code == 404 and "'gpt-4xxx" in message and "tiny-fa" in message and len(message) < 200


def test_request_bodies_over_the_bound_are_a_413_before_parsing(client):
    """Refused from Content-Length, or (a chunked body has none) from the bytes that arrived; an
    invalid body is not parsed at all (413, not 400), one just under the bound is."""
    over = b"{" * (serve.MAX_BODY_BYTES + 1)
    for content in (over, iter([over[:1000], over[1000:]])):  # with a Content-Length, then chunked
        response = client.post("/v1/completions", content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "body" in response.json()["error"]["message"]
    declared = client.post("/v1/completions", content=b"{}", headers={"Content-Type": "application/json",
                                                                      "Content-Length": str(len(over))})
    assert declared.status_code == 413  # the length alone decides: the body is not read
    under = client.post("/v1/completions", content=over[:serve.MAX_BODY_BYTES],
                        headers={"Content-Type": "application/json"})
    assert under.status_code == 400 and "not valid JSON" in under.json()["error"]["message"]


def test_stream_equals_non_stream_for_the_same_seed(client):
    request = dict(prompt=[PROMPT, "باران"], max_tokens=20, n=2, seed=11, temperature=0.9, logprobs=2, echo=True)
    whole = client.post("/v1/completions", json=request).json()
    with client.stream("POST", "/v1/completions",
                       json=dict(request, stream=True, stream_options=dict(include_usage=True))) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        chunks = read_events(response.iter_lines())
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert streamed_choices(chunks) == {c["index"]: (c["text"], c["finish_reason"], c["logprobs"])
                                        for c in whole["choices"]}
    assert len(chunks) > 8  # token by token, not one chunk per choice


def test_prompts_times_n_are_one_batch_in_the_apis_order(model, tokenizer):
    app = serve.create_app(model, tokenizer, "tiny-fa")
    decoder, batch_sizes = app.state.server.decoder, []
    step = decoder.step
    decoder.step = lambda: batch_sizes.append(len(decoder)) or step()
    prompts = [PROMPT, PERSIAN[1][:12], ""]
    body = TestClient(app).post("/v1/completions", json=dict(prompt=prompts, max_tokens=10, n=2, seed=5,
                                                             **SAMPLING)).json()
    runs = [expected(model, tokenizer, prompt, seed=5 + 2 * p + j, max_tokens=10, **SAMPLING)
            for p, prompt in enumerate(prompts) for j in range(2)]
    assert [c["index"] for c in body["choices"]] == list(range(6))
    assert [c["text"] for c in body["choices"]] == [text for text, _, _ in runs]
    assert body["usage"]["prompt_tokens"] == sum(len(runs[2 * p][1]) for p in range(3))
    assert body["usage"]["completion_tokens"] == sum(len(ids) for _, _, ids in runs)
    assert batch_sizes[0] == 6  # all six rows decoded together


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence_ends_the_text_before_it(client, model, tokenizer, stream):
    text, _, _ = expected(model, tokenizer, seed=2, max_tokens=30)
    stop = text[6:8]
    assert len(stop) == 2  # the unconstrained text is long enough to pick a stop sequence from
    request = dict(prompt=PROMPT, max_tokens=30, seed=2, stop=["نامحتمل‌ترین", stop], stream=stream, logprobs=1)
    if stream:
        with client.stream("POST", "/v1/completions", json=request) as response:
            chunks = read_events(response.iter_lines())
        assert not any(stop in c["choices"][0]["text"] for c in chunks)
        (got, finish_reason, logprobs), = streamed_choices(chunks).values()
    else:
        choice, = client.post("/v1/completions", json=request).json()["choices"]
        got, finish_reason, logprobs = choice["text"], choice["finish_reason"], choice["logprobs"]
    assert (got, finish_reason) == (text[:text.index(stop)], "stop")
    assert "".join(logprobs["tokens"]) == got  # the token holding the stop sequence is cut before it


def test_a_token_cut_by_a_stop_sequence_is_listed_under_its_cut_text(client, model, tokenizer):
    text, _, new_ids = expected(model, tokenizer, seed=2, max_tokens=30)
    offsets = [len(tokenizer.decode(new_ids[:i])) for i in range(len(new_ids) + 1)]
    # a stop sequence that begins inside a token read as two or more whole characters
    start = next(begin for begin, end, token in zip(offsets, offsets[1:], new_ids)
                 if end - begin >= 2 and tokenizer.decode([token]) == text[begin:end]
                 and "\ufffd" not in text[begin:end] and text.index(text[begin + 1:begin + 3]) == begin + 1)
    stop = text[start + 1:start + 3]
    choice = completion(client, prompt=PROMPT, max_tokens=30, seed=2, stop=[stop], logprobs=2)
    assert choice["text"] == text[:start + 1] and choice["logprobs"]["tokens"][-1] == text[start]
    check_logprobs(choice, len(choice["logprobs"]["tokens"]))


def test_stop_sequences_are_normalized_as_the_text_is(normalizing_client, normalizing):
    """A stop sequence written with Arabic yeh matches the Farsi yeh the model writes; a stop of a
    space stays a space (character rules only, no tidying of spaces)."""
    text = completion(normalizing_client, prompt=PROMPT, max_tokens=40, seed=2)["text"]
    assert "ی" in text and " " in text  # the unconstrained text has both to stop at
    start = text.index("ی")
    arabic_yeh = text[start:start + 2].replace("ی", "\u064a")
    for stop, end in ((arabic_yeh, start), (" ", text.index(" "))):
        choice = completion(normalizing_client, prompt=PROMPT, max_tokens=40, seed=2, stop=stop)
        assert (choice["text"], choice["finish_reason"]) == (text[:end], "stop")


@pytest.mark.parametrize("text, stops, result", [
    ("abc", ["x"], ("abc", "", False)),
    ("abcd", ["cde"], ("ab", "cd", False)),  # "cd" may still become "cde"
    ("abcdef", ["cd", "b"], ("a", "", True)),  # the earliest stop wins
    ("سلام دنیا", ["دنیای"], ("سلام ", "دنیا", False)),
])
def test_cut_at_stop(text, stops, result):
    assert serve.cut_at_stop(text, stops) == result
    ready, held, stopped = result
    assert serve.cut_at_stop(text, stops, final=True) == ((ready, "", True) if stopped else (text, "", False))


def test_prompt_longer_than_the_context_is_cropped(client, model, tokenizer):
    long_prompt = " ".join(PERSIAN * 2)
    body = client.post("/v1/completions", json=dict(prompt=long_prompt, max_tokens=8, seed=1)).json()
    text, prompt_ids, _ = expected(model, tokenizer, long_prompt, seed=1, max_tokens=8)
    assert body["usage"]["prompt_tokens"] == len(prompt_ids) == model.config.block_size
    assert body["choices"][0]["text"] == text


@pytest.mark.parametrize("text", [PERSIAN[0][:25], PERSIAN[3][:30], "تهران"])
def test_echo_scores_the_prompt_as_eval_does(client, model, tokenizer, text):
    body = client.post("/v1/completions", json=dict(prompt=text, max_tokens=0, echo=True, logprobs=3)).json()
    choice, = body["choices"]
    normalized, ids = sample.encode_prompt(text, tokenizer, model.config.block_size)  # <|endoftext|> + the text
    assert ids == [tokenizer.eot_id] + tokenizer.encode(normalized)  # it fits the context: one window
    assert choice["text"] == normalized and choice["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 0
    check_logprobs(choice, len(ids))
    logprobs = choice["logprobs"]
    assert logprobs["tokens"][0] == "" and logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert all(len(top) in (3, 4) for top in logprobs["top_logprobs"][1:])  # the 3 best and the prompt's own
    assert sum(logprobs["token_logprobs"][1:]) == pytest.approx(-token_nll(model, ids, model.config.block_size).sum(), abs=1e-4)


@pytest.mark.parametrize("stream", [False, True])
def test_echo_gives_the_prompt_as_sent(normalizing_client, normalizing, model, stream):
    """The model reads the prompt normalized; echo gives it back as the client sent it, so
    text[len(prompt):] is the completion, and places each token the model read at the offset of
    the characters it was read from."""
    prompt = "  كتابخانهٔ  مَرکزي\tشهر ٣ ساعت "  # Arabic kaf and yeh, a fatha, runs of spaces, a tab, a digit
    normalized, prompt_ids = sample.encode_prompt(prompt, normalizing, model.config.block_size)
    assert len(normalized) < len(prompt) - 4
    request = dict(prompt=prompt, max_tokens=8, seed=4, logprobs=1)
    plain = completion(normalizing_client, **request)
    if stream:
        with normalizing_client.stream("POST", "/v1/completions", json=dict(request, echo=True, stream=True)) as response:
            (text, _, logprobs), = streamed_choices(read_events(response.iter_lines())).values()
    else:
        echoed = completion(normalizing_client, **request, echo=True)
        text, logprobs = echoed["text"], echoed["logprobs"]
    assert text.startswith(prompt) and text[len(prompt):] == plain["text"]
    tokens, offsets = logprobs["tokens"], logprobs["text_offset"]
    assert "".join(tokens[:len(prompt_ids)]) == normalized  # the tokens the model read
    assert tokens[len(prompt_ids):] == plain["logprobs"]["tokens"]
    assert offsets[len(prompt_ids):] == [len(prompt) + offset for offset in plain["logprobs"]["text_offset"]]
    assert offsets == sorted(offsets) and offsets[len(prompt_ids) - 1] < len(prompt)
    for piece, offset in zip(tokens[:len(prompt_ids)], offsets):  # each read from the characters at its offset
        sent = prompt[offset]
        assert piece == "" or normalizing.normalize(sent, tidy_spaces=False) == piece[0] or \
            sent.isspace() and piece[0].isspace()


def test_logprobs_0_lists_the_chosen_token(client):
    """logprobs: 0 gives every token (but the first, which nothing comes before) its own entry, generated
    or echoed, as in the OpenAI API."""
    logprobs = completion(client, prompt=PROMPT, max_tokens=8, seed=1, echo=True, logprobs=0)["logprobs"]
    assert len(logprobs["tokens"]) > 8 and logprobs["top_logprobs"][0] is None
    for logprob, top in zip(logprobs["token_logprobs"][1:], logprobs["top_logprobs"][1:]):
        assert list(top.values()) == [logprob]  # the chosen token's, alone


def test_generated_logprobs_are_the_models(client, model, tokenizer):
    """Each generated token's log-prob is what scoring the whole text afterwards gives it."""
    request = dict(prompt=PROMPT, max_tokens=10, seed=4, logprobs=2, echo=True, **SAMPLING)
    choice, = client.post("/v1/completions", json=request).json()["choices"]
    _, prompt_ids, new_ids = expected(model, tokenizer, seed=4, max_tokens=10, **SAMPLING)
    check_logprobs(choice, len(prompt_ids) + len(new_ids))
    scores = [logprob for logprob, _ in sample.score_prompt(model, prompt_ids + new_ids, 0)]
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(scores, abs=1e-4)


def test_token_id_prompts_are_read_as_given(client, model, tokenizer):
    """Token ids go to the model as they are (no normalization, no <|endoftext|> added), alone or
    as a list, and echo them one record each: a log-likelihood client sums its continuation's
    log-probs by position."""
    _, ids = sample.encode_prompt(PROMPT, tokenizer, model.config.block_size)
    as_text = client.post("/v1/completions", json=dict(prompt=PROMPT, max_tokens=6, seed=2)).json()
    for prompt in (ids, [ids, ids[1:]]):
        body = client.post("/v1/completions", json=dict(prompt=prompt, max_tokens=6, seed=2)).json()
        assert body["choices"][0]["text"] == as_text["choices"][0]["text"]
    assert body["usage"]["prompt_tokens"] == 2 * len(ids) - 1
    scored = client.post("/v1/completions", json=dict(prompt=ids[1:], max_tokens=1, echo=True, logprobs=1,
                                                      temperature=0)).json()["choices"][0]
    check_logprobs(scored, len(ids))  # the ids, then the one generated token
    scores = [logprob for logprob, _ in sample.score_prompt(model, ids[1:], 0)]
    assert scored["logprobs"]["token_logprobs"][1:-1] == pytest.approx(scores, abs=1e-4)


def test_the_end_of_the_document_is_a_token_of_no_text(model, tokenizer):
    """A row that chooses <|endoftext|> lists it in logprobs with the piece "", so the echoed prompt
    is followed by one token per step, as log-likelihood clients slice it."""
    ends = copy.deepcopy(model)
    ends.lm_head.register_forward_hook(lambda module, inputs, logits: logits.index_add(
        -1, torch.tensor([tokenizer.eot_id]), torch.full(logits.shape[:-1] + (1,), 50.0)))
    client = TestClient(serve.create_app(ends, tokenizer, "tiny-fa"))
    body = client.post("/v1/completions", json=dict(prompt=PROMPT, max_tokens=5, echo=True, logprobs=1,
                                                    temperature=0)).json()
    choice, prompt_ids = body["choices"][0], sample.encode_prompt(PROMPT, tokenizer, model.config.block_size)[1]
    assert choice["text"] == PROMPT and choice["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 1
    check_logprobs(choice, len(prompt_ids) + 1)
    logprob = choice["logprobs"]["token_logprobs"][-1]
    assert choice["logprobs"]["tokens"][-1] == "" and logprob > -1e-3
    assert choice["logprobs"]["top_logprobs"][-1] == {"": logprob}  # its alternative under the same text


def test_a_prompt_of_token_ids_may_end_inside_a_character():
    """The completion goes on from the prompt's unfinished character: its first token, which
    completes the character, carries all of it (echoed or not), rather than a U+FFFD."""
    bytes_only = Tokenizer([])  # a token per byte
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=bytes_only.vocab_size, n_layer=1, n_head=1, n_embd=8)).eval()
    client = TestClient(serve.create_app(model, bytes_only, "bytes"))
    first, second = "س".encode()
    request = dict(prompt=[ord("a"), first], max_tokens=1, logit_bias={str(second): 100}, logprobs=0)
    assert completion(client, **request)["text"] == "س"
    echoed = completion(client, **request, echo=True)
    assert echoed["text"] == "aس" and echoed["logprobs"]["tokens"] == ["a", "", "س"]
    check_logprobs(echoed, 3)


def test_fields_openai_clients_send_by_default_are_accepted(client, model, tokenizer):
    defaults = dict(frequency_penalty=0, presence_penalty=0, logit_bias={}, best_of=1, n=1, user="user-1234")
    choice = completion(client, prompt=PROMPT, max_tokens=10, seed=3, **defaults)
    assert choice["text"] == expected(model, tokenizer, seed=3, max_tokens=10)[0]
    body = client.post("/v1/completions", json=dict(prompt=PROMPT, max_tokens=3, n=2, best_of=2)).json()
    assert len(body["choices"]) == 2


@pytest.mark.parametrize("settings", [dict(frequency_penalty=2), dict(presence_penalty=2, temperature=0),
                                      dict(frequency_penalty=-1.5, presence_penalty=0.5, **SAMPLING)])
def test_frequency_and_presence_penalties_are_the_decoders(client, model, tokenizer, settings):
    choice = completion(client, prompt=PROMPT, max_tokens=20, seed=6, **settings)
    assert choice["text"] == decoder_text(model, tokenizer, seed=6, max_tokens=20, **settings)
    unpenalized = {key: value for key, value in settings.items() if key not in ("frequency_penalty", "presence_penalty")}
    assert choice["text"] != decoder_text(model, tokenizer, seed=6, max_tokens=20, **unpenalized)  # they count


def test_logit_bias_forces_and_bans_tokens(client, model, tokenizer):
    forced, = tokenizer.encode("ا")  # a token of whole characters
    text = completion(client, prompt=PROMPT, max_tokens=6, seed=1, logit_bias={str(forced): 100})["text"]
    assert text == "ا" * 6
    _, _, greedy_ids = expected(model, tokenizer, max_tokens=1, greedy=True)
    bias = {greedy_ids[0]: -100, tokenizer.eot_id: -30.5}
    banned = completion(client, prompt=PROMPT, max_tokens=8, temperature=0, logit_bias={str(k): v for k, v in bias.items()})
    assert banned["text"] == decoder_text(model, tokenizer, max_tokens=8, temperature=0, logit_bias=bias)
    assert not banned["text"].startswith(tokenizer.decode(greedy_ids))


def test_a_failing_step_fails_its_requests_only(model, tokenizer):
    app = serve.create_app(model, tokenizer, "tiny-fa")
    client, server = TestClient(app), app.state.server

    def out_of_memory():
        raise RuntimeError("out of memory\n(a second line of details)")
    server.decoder.step = out_of_memory
    response = client.post("/v1/completions", json=dict(prompt=PROMPT, max_tokens=5))
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "generation failed: RuntimeError: out of memory"  # one line
    server.decoder.step = out_of_memory  # the batch starts again with a new Decoder: break that one too
    with client.stream("POST", "/v1/completions", json=dict(prompt=PROMPT, max_tokens=5, stream=True)) as streamed:
        *_, last = [line for line in streamed.iter_lines() if line]
    assert "out of memory" in json.loads(last[len("data: "):])["error"]["message"]
    assert client.post("/v1/completions", json=dict(prompt=PROMPT, max_tokens=5)).status_code == 200  # a new Decoder


def test_a_job_whose_event_loop_has_closed_does_not_stop_the_model_thread(model, tokenizer):
    """Its updates go nowhere (its server has stopped) and the model thread goes on serving."""
    app = serve.create_app(model, tokenizer, "tiny-fa")
    client, server = TestClient(app), app.state.server

    async def make_job():
        return serve.Job(serve.CompletionRequest(prompt=PROMPT, max_tokens=2), [([1, 2], None)], stops=[], seed=0)
    loop = asyncio.new_event_loop()
    orphan = loop.run_until_complete(make_job())
    loop.close()
    with server.wakeup:
        server.waiting.append(orphan)
        server.wakeup.notify()
    texts = []
    request = threading.Thread(target=lambda: texts.append(completion(client, prompt=PROMPT, max_tokens=5, seed=1)),
                               daemon=True)
    request.start()
    request.join(timeout=60)  # a dead model thread would leave the request waiting for ever
    assert [choice["text"] for choice in texts] == [expected(model, tokenizer, seed=1, max_tokens=5)[0]]


def test_health_models_and_page(client, model, tokenizer):
    health = client.get("/health").json()
    assert health["model"] == "tiny-fa" and health["device"] == "cpu"
    assert health["parameters"] == model.num_params() and health["vocab_size"] == tokenizer.vocab_size
    assert health["max_batch"] == serve.DEFAULTS["max_batch"] and health["max_queue"] == serve.DEFAULTS["max_queue"]
    assert health["active_requests"] == health["queued_requests"] == health["active_rows"] == 0
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-fa"
    assert set(client.get("/openapi.json").json()["paths"]) == {"/v1/completions", "/v1/models", "/health"}
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needle in ['dir="rtl"', 'lang="fa"', "Vazirmatn", 'id="temperature"', 'id="top_p"', 'id="top_k"',
                   'id="max_tokens"', 'id="repetition_penalty"', "getReader", 'fetch("/v1/completions"', "stream: true"]:
        assert needle in page.text


# -----------------------------------------------------------------------------
# serve.py as a process, over loopback

def run_serve(*args, prelude="pass"):
    """Run serve.py as a script, after `prelude` (Python code) has run in the same interpreter."""
    code = f"import runpy, sys\n{prelude}\nsys.argv = ['serve.py', *{list(args)!r}]\n" \
           f"runpy.run_path('serve.py', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)


NO_CUDA = "import torch; torch.cuda.is_available = lambda: False"


def write_checkpoint(out_dir, tokenizer):
    torch.manual_seed(1)
    tiny = GPT(GPTConfig(block_size=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=32,
                         pos_emb="learned"))
    tokenizer_json = tokenizer.to_json()
    torch.save({"model_args": vars(tiny.config), "model": tiny.state_dict(), "tokenizer": tokenizer_json,
                "tokenizer_sha256": tokenizer_hash(tokenizer_json)}, out_dir / "ckpt.pt")
    return out_dir


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, tokenizer):
    return write_checkpoint(tmp_path_factory.mktemp("out-tiny"), tokenizer)


@pytest.mark.parametrize("args, prelude, expected_text", [
    (("--out_dir=/nonexistent",), "pass", "no checkpoint at /nonexistent"),
    ((), "sys.modules['fastapi'] = None", "pip install -r requirements-serve.txt"),
    (("--device=cuda",), NO_CUDA, "device is cuda but no CUDA GPU is available"),
    (("--device=gpu",), "pass", "unknown device 'gpu'"),
    (("--max_batch=0",), "pass", "max_batch"),
    (("--quantize=int4",), "pass", "quantize must be"),
    (("--threads=-1",), "pass", "threads must be"),
])
def test_startup_problems_are_one_line_errors(checkpoint_dir, args, prelude, expected_text):
    result = run_serve(f"--out_dir={checkpoint_dir}", *args, prelude=prelude)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ") and expected_text in result.stderr


@pytest.mark.parametrize("args", [(), ("--quantize=int8",), ("--quantize=bf16",)])
def test_device_auto_and_quantized_weights(checkpoint_dir, args):
    """serve.py's own main() up to the server, which here answers one completion in-process."""
    answer_one = ("import uvicorn; from fastapi.testclient import TestClient; uvicorn.run = lambda app, **options: "
                  "print(TestClient(app).post('/v1/completions', json=dict(prompt='شهر', max_tokens=3)).json())")
    result = run_serve(f"--out_dir={checkpoint_dir}", *args, prelude=f"{NO_CUDA}; {answer_one}")
    assert result.returncode == 0 and " on cpu at " in result.stdout and "'completion_tokens'" in result.stdout


def test_int8_weights_serve_what_sample_generates_with_them(model, tokenizer):
    int8 = quantize_weights(copy.deepcopy(model), "int8")
    body = TestClient(serve.create_app(int8, tokenizer, "tiny-int8")).post(
        "/v1/completions", json=dict(prompt=PROMPT, max_tokens=10, seed=3)).json()
    assert body["choices"][0]["text"] == expected(int8, tokenizer, seed=3, max_tokens=10)[0]


@pytest.fixture(scope="module")
def start_server(checkpoint_dir):
    """start_server(*args): serve.py on a free loopback port serving the tiny checkpoint; its URL."""
    processes = []

    def start(*args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # one PyTorch thread: on a busy CI machine a team of spinning OpenMP threads can slow a
        # tiny model's steps a hundredfold, and these tests are about behaviour, not speed
        process = subprocess.Popen([sys.executable, "serve.py", f"--out_dir={checkpoint_dir}", f"--port={port}",
                                    "--device=cpu", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                return url
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"serve.py did not start: {process.stderr.read()}")
                time.sleep(0.2)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(start_server):
    return start_server()


@pytest.fixture(scope="module")
def served_model(checkpoint_dir):
    model, tokenizer, _ = load_checkpoint(str(checkpoint_dir / "ckpt.pt"), "cpu")
    return model, tokenizer


def health(url):
    return httpx.get(f"{url}/health").json()


def test_openai_client(server, served_model):
    openai = pytest.importorskip("openai", reason="the openai client is a test-only dependency")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="not-needed", max_retries=0)
    model_name = client.models.list().data[0].id
    assert model_name.startswith("out-tiny")
    request = dict(model=model_name, prompt="باران پاییزی", max_tokens=24, seed=9, temperature=0.8,
                   extra_body=dict(top_k=50, repetition_penalty=1.2),
                   # what LangChain's OpenAI wrapper sends by default
                   frequency_penalty=0, presence_penalty=0, logit_bias={}, best_of=1, n=1, user="someone")
    completion = client.completions.create(**request)
    stream = client.completions.create(stream=True, **request)
    pieces = [chunk.choices[0].text for chunk in stream if chunk.choices]
    text, prompt_ids, new_ids = expected(*served_model, "باران پاییزی", seed=9, max_tokens=24,
                                         temperature=0.8, top_k=50, repetition_penalty=1.2)
    assert completion.choices[0].text == "".join(pieces) == text
    assert completion.usage.prompt_tokens == len(prompt_ids) and completion.usage.completion_tokens == len(new_ids)

    greedy = client.completions.create(model=model_name, prompt=["باران", "شهر"], max_tokens=8, temperature=0,
                                       logprobs=2)
    for choice, prompt in zip(greedy.choices, ["باران", "شهر"]):
        assert choice.text == expected(*served_model, prompt, max_tokens=8, greedy=True)[0]
        for logprob, top in zip(choice.logprobs.token_logprobs, choice.logprobs.top_logprobs):
            assert logprob == max(top.values())  # greedy: every token the most likely
    scored = client.completions.create(model=model_name, prompt="باران پاییزی", max_tokens=0, echo=True, logprobs=0)
    assert scored.choices[0].text == "باران پاییزی" and scored.choices[0].logprobs.token_logprobs[0] is None
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(model=model_name, prompt="باران", logprobs=9)
    with pytest.raises(openai.BadRequestError, match="best_of"):
        client.completions.create(model=model_name, prompt="باران", best_of=3)


def raw_post(url, head, body=b""):
    """The status line serve.py answers a POST of these header lines and body, sent as they are."""
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as connection:
        connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                           + head + b"\r\n" + body)
        return connection.recv(4096).split(b"\r\n")[0]


def test_a_body_over_the_bound_is_refused_before_it_has_all_arrived(server):
    over = serve.MAX_BODY_BYTES + 1
    assert raw_post(server, b"Content-Length: %d\r\n" % over).startswith(b"HTTP/1.1 413 ")  # nothing sent
    chunk = b"%x\r\n%s\r\n" % (over, b"{" * over)  # a chunked body, never ended
    assert raw_post(server, b"Transfer-Encoding: chunked\r\n", chunk).startswith(b"HTTP/1.1 413 ")
    assert health(server)["status"] == "ok"


def test_concurrent_requests_match_sequential_ones(server):
    requests = [dict(prompt=prompt, max_tokens=120, seed=seed, stream=seed % 2 == 0, logprobs=1, n=1 + seed % 2,
                     **(dict(temperature=0) if seed % 3 == 0 else SAMPLING))
                for seed, prompt in enumerate(PERSIAN + [PROMPT, "", "تهران"])]

    def complete(request):
        with httpx.stream("POST", f"{server}/v1/completions", json=request, timeout=60) as response:
            lines = list(response.iter_lines())
        if request["stream"]:
            return streamed_choices(read_events(lines))
        return {c["index"]: (c["text"], c["finish_reason"], c["logprobs"]) for c in json.loads("".join(lines))["choices"]}

    def logprobs_apart(results):  # a product over a batch may round apart from one over a row (~1e-6)
        return ([{i: (text, reason, logprobs["tokens"]) for i, (text, reason, logprobs) in result.items()}
                 for result in results],
                [logprob for result in results for *_, logprobs in result.values() for logprob in logprobs["token_logprobs"]])

    sequential = [complete(request) for request in requests]
    before = health(server)
    concurrent = [None] * len(requests)

    def worker(i):
        concurrent[i] = complete(requests[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (texts, logprobs), (expected_texts, expected_logprobs) = logprobs_apart(concurrent), logprobs_apart(sequential)
    assert texts == expected_texts and logprobs == pytest.approx(expected_logprobs, abs=1e-4)
    after = health(server)
    tokens, steps = (after[key] - before[key] for key in ("generated_tokens", "decode_steps"))
    assert tokens / steps > 2  # the requests were decoded together, not one after another


def test_full_queue_is_a_503(start_server):
    url = start_server("--max_batch=1", "--max_queue=1")
    long_request = dict(prompt=PROMPT, max_tokens=3000, top_k=1, stream=True)
    with httpx.Client(timeout=60) as first, httpx.Client(timeout=60) as second:
        with first.stream("POST", f"{url}/v1/completions", json=long_request) as running:
            lines = running.iter_lines()  # kept: a discarded iterator would close the response
            next(lines)  # generating: the one row is taken
            waiting = threading.Thread(target=second.post, args=(f"{url}/v1/completions",),
                                       kwargs=dict(json=dict(prompt=PROMPT, max_tokens=2)))
            waiting.start()
            deadline = time.monotonic() + 30
            while health(url)["queued_requests"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            status = health(url)
            assert (status["active_requests"], status["active_rows"], status["queued_requests"],
                    status["queued_rows"]) == (1, 1, 1, 1)
            refused = httpx.post(f"{url}/v1/completions", json=dict(prompt=PROMPT))
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
        waiting.join(timeout=30)  # the first client hung up: the waiting request ran
        assert not waiting.is_alive() and health(url)["queued_requests"] == 0


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_stops_generation(server, stream):
    request = dict(prompt=PROMPT, max_tokens=800, top_k=1, stream=stream)  # top_k=1: the same tokens every time
    uninterrupted = httpx.post(f"{server}/v1/completions", json=dict(request, stream=False), timeout=120).json()
    assert uninterrupted["usage"]["completion_tokens"] == 800  # no end of text before max_tokens

    before = health(server)["generated_tokens"]
    body = json.dumps(request).encode()
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1]))) as connection:
        connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 30
        while health(server)["generated_tokens"] - before < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
    # hung up while generating: the server must stop well short of the 800 tokens
    while (after := health(server))["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert after["active_requests"] == 0 and 20 <= after["generated_tokens"] - before < 400


def test_updates_that_wait_together_are_yielded_together():
    """A client that has fallen behind gets all the updates waiting for it at once (one write),
    in order; the job is dropped when its last choice ends."""
    first, second = [dict(index=0, finish_reason=None)], [dict(index=1, finish_reason=None)]
    last = [dict(index=0, finish_reason="length"), dict(index=1, finish_reason="stop")]

    class Connected:
        async def is_disconnected(self):
            return False

    async def receive():
        job = serve.Job(serve.CompletionRequest(prompt="شهر", n=2, max_tokens=3), [([1], "شهر")], stops=[], seed=0)
        serve.send({job: first})
        serve.send({job: second})
        received = []
        async for items in job.updates(Connected()):
            received.append(items)
            if len(received) == 1:
                serve.send({job: last})
        return received, job.cancelled

    assert asyncio.run(receive()) == ([first + second, last], True)


SCORING = {(1, 1, True, False), (1, 2, True, False)}  # echo's score_prompt: no KV cache


@pytest.mark.parametrize("max_batch, expected", [(1, {(1, 2, False, True), (1, 1, True, True), *SCORING}),
                                                 (4, {(1, 2, False, True), (1, 1, False, True), (2, 1, True, True),
                                                      (1, 1, True, True), *SCORING})])
def test_warm_up_runs_every_kind_of_step(model, max_batch, expected):
    """Before the server listens, warm_up runs a prompt of several tokens and of one, a step of one
    row and (when max_batch allows) of several, and echo's scoring of one position and of several:
    the calls (rows, length, head, KV cache) a compiled model makes a graph for."""
    calls = set()

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config, self.wte = model.config, model.wte  # what a Decoder reads

        def new_kv_cache(self, batch_size):
            return model.new_kv_cache(batch_size)

        def forward(self, idx, kv_cache=None, cache_row=0, head=True):
            calls.add((*idx.shape, head, kv_cache is not None))
            return model(idx, kv_cache=kv_cache, cache_row=cache_row, head=head)

    serve.warm_up(Recording(), max_batch)
    assert calls == expected
