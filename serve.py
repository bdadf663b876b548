"""
Serve a trained checkpoint over HTTP: an OpenAI-compatible completions API, a simple
/generate route, and a small right-to-left Persian page to try the model in a browser.

    pip install -r requirements-serve.txt
    python serve.py --out_dir=out-fawiki-small
    # page: http://127.0.0.1:8000/   API docs: http://127.0.0.1:8000/docs

    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \
         -d '{"prompt": "تهران پایتخت", "max_tokens": 40, "stream": true}'

Any OpenAI client works with its base_url at http://127.0.0.1:8000/v1. Generation is sample.py's
(the same prompt normalisation, sampling and UTF-8-safe text), batched continuously: one model
thread steps a sample.Decoder of --max_batch rows, a row per prompt and choice of any request;
new prompts join at the next step, a row leaves as soon as it ends, and each row gets the tokens
it would get alone. Requests that find too few free rows wait in a queue of --max_queue; beyond
it the answer is 503. The model runs on one PyTorch thread (--threads), which serves a small
model on a CPU better than one thread per core: see main.
"""

import asyncio
import collections
import itertools
import json
import os
import secrets
import sys
import threading
import time
import uuid
from typing import Annotated

import torch

import common
from sample import (DEFAULTS as SAMPLE_DEFAULTS, Decoder, encode_prompt, load_out_dir, read_token, score_prompt,
                    utf8_decoder)

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field, field_validator
    from starlette.exceptions import HTTPException
except ImportError as e:  # the serving extra is optional: the rest of the project never needs it
    if __name__ != "__main__":
        raise
    sys.exit(f"error: serve.py needs FastAPI and uvicorn ({e.name} is missing): "
             f"pip install -r requirements-serve.txt")

DEFAULTS = dict(
    out_dir="out-fawiki-small",  # folder holding ckpt.pt (its tokenizer is stored inside it)
    host="127.0.0.1",  # loopback only; 0.0.0.0 would open the server to the whole network
    port=8000,  # TCP port to listen on
    device="auto",  # cpu, cuda, cuda:1, mps ... or auto (CUDA when available)
    max_batch=16,  # rows decoded together; a request takes one row per prompt and choice
    max_queue=64,  # requests waiting for free rows; more are answered 503 at once
    quantize="none",  # "int8" or "bf16" weights on a CPU, as sample.py --quantize (model.quantize_weights)
    threads=1,  # PyTorch threads for the model; 0 = PyTorch's default, one per core (see main)
)

# bounds on a request: enough for any real use, small enough that no request can hog the server
MAX_TOKENS = 4096  # tokens generated per completion
MAX_CHOICES = 8  # completions per prompt (n)
MAX_PROMPTS = 64  # prompts per request
MAX_PROMPT_CHARS = 20_000  # per prompt; a prompt longer than the context is cropped to its end
MAX_PROMPT_TOKENS = 20_000  # per prompt given as token ids, cropped likewise
MAX_STOPS = 4  # stop sequences per request, as in the OpenAI API
MAX_LOGPROBS = 5  # alternatives per token in logprobs, as in the OpenAI API
DISCONNECT_POLL = 0.25  # seconds between checks that a waiting client is still connected
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "index.html")


# -----------------------------------------------------------------------------
# requests, validated field by field

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False  # end the stream with a chunk holding the token counts


TextPrompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]  # "" = a fresh document
TokenPrompt = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_PROMPT_TOKENS)]


class CompletionRequest(BaseModel):
    """The OpenAI completions request, plus top_k and repetition_penalty as in sample.py.
    Fields the model cannot honour (suffix, best_of, ...) are refused, and so is any misspelt one."""
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None  # optional: this server holds one model
    # texts or, as the OpenAI API allows, lists of token ids, read as given; or one of either
    prompt: list[TextPrompt | TokenPrompt] = Field([""], min_length=1, max_length=MAX_PROMPTS)
    max_tokens: int = Field(16, ge=0, le=MAX_TOKENS)  # 0 with echo and logprobs: score the prompt only
    temperature: float = Field(1.0, ge=0, le=2)  # 0 = greedy
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=65536)  # 0 = no limit
    repetition_penalty: float = Field(1.0, gt=0, le=10)  # 1 = off
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: list[Annotated[str, Field(min_length=1)]] = Field([], max_length=MAX_STOPS)  # or one string
    seed: int | None = Field(None, ge=0, le=2**62)  # choice i samples with seed + i
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # log-probs of each token and its top alternatives
    echo: bool = False  # the prompt comes back before the completion (with its log-probs if asked)
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def prompt_list(cls, prompt):
        one = isinstance(prompt, str) or isinstance(prompt, list) and prompt and isinstance(prompt[0], int)
        return [prompt] if one else prompt

    @field_validator("stop", mode="before")
    @classmethod
    def stop_list(cls, stop):
        return [] if stop is None else [stop] if isinstance(stop, str) else stop


class GenerateRequest(BaseModel):
    """POST /generate, for clients that want one string back; defaults as in sample.py."""
    model_config = ConfigDict(extra="forbid", strict=True)
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    max_length: int = Field(SAMPLE_DEFAULTS["max_new_tokens"], ge=1, le=MAX_TOKENS)  # new tokens, prompt not counted
    temperature: float = Field(SAMPLE_DEFAULTS["temperature"], ge=0, le=2)  # 0 = greedy
    top_k: int = Field(SAMPLE_DEFAULTS["top_k"], ge=0, le=65536)
    top_p: float = Field(SAMPLE_DEFAULTS["top_p"], gt=0, le=1)


# -----------------------------------------------------------------------------
# text and log-probabilities

def cut_at_stop(text, stops):
    """Split pending text into (ready, held, stopped) against the stop sequences.

    Up to the first stop sequence, text is ready to send and generation ends. Otherwise the
    longest ending of the text that could begin a stop sequence is held back until the next
    piece decides it, so a client never receives the start of a stop sequence."""
    hits = [position for position in (text.find(stop) for stop in stops) if position >= 0]
    if hits:
        return text[:min(hits)], "", True
    held = max((size for stop in stops for size in range(1, len(stop)) if text.endswith(stop[:size])),
               default=0)
    return text[:len(text) - held], text[len(text) - held:], False


def read_record(tokenizer, decoder, token_id, logprob=None, top=None):
    """sample.read_token's record, but <|endoftext|> (a document's start or end) is no text: its
    piece is "", and the characters around it are read as if it were not there."""
    if token_id != tokenizer.eot_id:
        return read_token(tokenizer, decoder, token_id, logprob, top)
    reader = utf8_decoder()
    reader.setstate(decoder.getstate())
    return ["", *read_token(tokenizer, reader, token_id, logprob, top)[1:]]


def echo_tokens(model, tokenizer, prompt_ids, top_n):
    """Token records (as read_record's) of the prompt. The first token has no log-prob (nothing
    comes before it)."""
    decoder = utf8_decoder()
    scores = score_prompt(model, prompt_ids, top_n) if top_n is not None else itertools.repeat((None, None))
    return [read_record(tokenizer, decoder, token_id, logprob, top)
            for token_id, (logprob, top) in zip(prompt_ids, itertools.chain([(None, None)], scores))]


def logprobs_object(tokens, offset):
    """OpenAI's logprobs of token records whose text starts at character `offset` of the choice."""
    pieces = [piece for piece, _, _ in tokens]
    return dict(tokens=pieces, token_logprobs=[logprob for _, logprob, _ in tokens],
                top_logprobs=[top for _, _, top in tokens],
                text_offset=list(itertools.accumulate(map(len, pieces), initial=offset))[:-1])


def sse(payload):
    """One server-sent event in the format of the OpenAI streaming API."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class APIError(Exception):
    """An error answered as the OpenAI API shapes them, so its clients show the message."""

    def __init__(self, status, message, param=None, code=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.body = status, dict(error=dict(message=message, type=kind, param=param, code=code))

    def response(self):
        return JSONResponse(status_code=self.status, content=self.body)


# -----------------------------------------------------------------------------
# continuous batching

class Choice:
    """One completion: where its text stands and the tokens read but not sent yet."""

    def __init__(self, index, stops):
        self.index, self.stops = index, stops
        self.offset = 0  # characters of the choice's text sent so far
        self.count = 0  # tokens generated
        self.decoder = utf8_decoder()
        self.unsent = []  # token records whose text may still begin a stop sequence

    def update(self, tokens, finish_reason=None):
        """What the client receives: the text of `tokens` and where it starts in the choice."""
        text = "".join(piece for piece, _, _ in tokens)
        self.offset += len(text)
        return dict(index=self.index, text=text, tokens=tokens, offset=self.offset - len(text),
                    finish_reason=finish_reason, count=self.count)

    def read(self, tokenizer, token_id, logprob, top, finished):
        """Take one Decoder event; return (update or None, whether a stop sequence ended the text).
        Text goes out in whole tokens; the token holding a stop sequence is cut before it. The
        <|endoftext|> that ends the document (token_id None) is a token of no text, so the
        logprobs list every token the model chose, as log-likelihood clients expect of echo."""
        self.count += 1
        self.unsent.append(read_record(tokenizer, self.decoder, tokenizer.eot_id if token_id is None else token_id,
                                       logprob, top))
        if finished and self.unsent:  # an unfinished character at the very end becomes U+FFFD
            self.unsent[-1][0] += self.decoder.decode(b"", final=True)
        ready, _, stopped = cut_at_stop("".join(piece for piece, _, _ in self.unsent), self.stops)
        sent = size = 0
        while sent < len(self.unsent) and size + len(self.unsent[sent][0]) <= len(ready):
            size += len(self.unsent[sent][0])
            sent += 1
        if stopped and size < len(ready):
            self.unsent[sent][0] = self.unsent[sent][0][:len(ready) - size]
            sent += 1
        if stopped or finished:
            reason = "stop" if stopped or token_id is None else "length"
            return self.update(self.unsent[:sent] if stopped else self.unsent, reason), stopped
        tokens, self.unsent = self.unsent[:sent], self.unsent[sent:]
        return (self.update(tokens) if tokens else None), False


class Job:
    """One request: its prompt ids and settings, and the asyncio queue its updates go to."""

    def __init__(self, body, prompts, seed):
        self.body, self.prompts, self.seed = body, prompts, seed
        self.num_choices = len(prompts) * body.n  # choice i of prompt p is choice p * n + i
        self.rows_needed = self.num_choices if body.max_tokens else 0
        self.loop, self.updates = asyncio.get_running_loop(), asyncio.Queue()
        self.cancelled = False


def send(updates):
    """From the model thread: hand each job of {job: a list of updates, or an APIError} its entry,
    with one call into each event loop for all its jobs (waking a loop costs more than the
    hand-off itself, and a step has an update for every row)."""
    by_loop = collections.defaultdict(list)
    for job, entry in updates.items():
        by_loop[job.loop].append((job, entry))
    for loop, entries in by_loop.items():
        loop.call_soon_threadsafe(deliver, entries)


def deliver(entries):
    """In the event loop: put each (job, entry) into the job's queue."""
    for job, entry in entries:
        job.updates.put_nowait(entry)


class Batcher:
    """The model thread: admits waiting jobs into free Decoder rows and runs one step for all rows."""

    def __init__(self, model, tokenizer, max_batch, max_queue):
        self.model, self.tokenizer, self.max_batch, self.max_queue = model, tokenizer, max_batch, max_queue
        self.decoder = Decoder(model, max_batch)
        self.waiting = collections.deque()  # jobs not yet in the batch
        self.active = {}  # Decoder row -> (job, choice)
        self.stats = dict(generated_tokens=0, decode_steps=0)
        self.wakeup = threading.Condition()
        threading.Thread(target=self.run, name="model", daemon=True).start()

    def submit(self, job):
        with self.wakeup:
            if len(self.waiting) >= self.max_queue:
                raise APIError(503, f"the server is busy: {self.max_queue} requests are already waiting; retry later",
                               code="queue_full", kind="server_error")
            self.waiting.append(job)
            self.wakeup.notify()

    def cancel(self, job):
        """Drop a job (its client has gone, or it has ended): its rows leave before the next step."""
        with self.wakeup:
            job.cancelled = True
            self.wakeup.notify()

    def run(self):
        """Forever: drop the jobs whose clients have gone, admit waiting jobs, step the batch."""
        with torch.inference_mode():
            while True:
                with self.wakeup:
                    while not self.waiting and not self.active:
                        self.wakeup.wait()
                    self.waiting = collections.deque(job for job in self.waiting if not job.cancelled)
                    for row in [row for row, (job, _) in self.active.items() if job.cancelled]:
                        self.decoder.remove(row)
                        del self.active[row]
                    jobs, free = [], self.max_batch - len(self.active)
                    while self.waiting and self.waiting[0].rows_needed <= free:  # first come, first served
                        jobs.append(self.waiting.popleft())
                        free -= jobs[-1].rows_needed
                try:
                    for job in jobs:
                        self.start(job)
                    if self.active:
                        self.step()
                except Exception as e:  # out of memory, ...: the jobs in the batch fail, the server goes on
                    error = APIError(500, f"generation failed: {type(e).__name__}: {e}", kind="server_error")
                    send({job: error for job in set(jobs) | {job for job, _ in self.active.values()}})
                    self.active.clear()
                    self.decoder = Decoder(self.model, self.max_batch)

    def start(self, job):
        """Send each choice its echoed prompt, then read the prompts into free rows."""
        body, updates = job.body, []
        for p, prompt_ids in enumerate(job.prompts):
            echo = echo_tokens(self.model, self.tokenizer, prompt_ids, body.logprobs) if body.echo else []
            for index in range(p * body.n, (p + 1) * body.n):
                choice = Choice(index, body.stop)
                if echo or not body.max_tokens:
                    updates.append(choice.update(echo, None if body.max_tokens else "length"))
                if body.max_tokens:
                    generator = torch.Generator(device=self.decoder.device).manual_seed(job.seed + index)
                    row = self.decoder.add(prompt_ids, temperature=body.temperature, top_k=body.top_k,
                                           top_p=body.top_p, repetition_penalty=body.repetition_penalty,
                                           generator=generator, max_new_tokens=body.max_tokens,
                                           stop_ids=(self.tokenizer.eot_id,), top_logprobs=body.logprobs or 0)
                    self.active[row] = (job, choice)
        if updates:
            send({job: updates})

    def step(self):
        """One forward pass for every row; updates go to their jobs; an ended row leaves at once."""
        updates = collections.defaultdict(list)
        self.stats["decode_steps"] += 1
        for row, token_id, logprob, top, finished in self.decoder.step():
            job, choice = self.active[row]
            self.stats["generated_tokens"] += token_id is not None
            update, stopped = choice.read(self.tokenizer, token_id, logprob,
                                          top if job.body.logprobs is not None else None, finished)
            if update:
                updates[job].append(update)
            if stopped and not finished:
                self.decoder.remove(row)
            if stopped or finished:  # a finished row the Decoder has freed itself
                del self.active[row]
        send(updates)

    async def updates(self, job, request):
        """Yield the job's updates until every choice has ended: a list of all that have arrived
        since the last (one write for a client that has fallen behind, not one per step). Stop
        early if the client hangs up. Either way the job is dropped."""
        unfinished = job.num_choices
        try:
            while unfinished:
                entries = []
                try:
                    async with asyncio.timeout(DISCONNECT_POLL):
                        entries.append(await job.updates.get())
                except TimeoutError:
                    pass
                while not job.updates.empty():
                    entries.append(job.updates.get_nowait())
                for entry in entries:
                    if isinstance(entry, APIError):
                        raise entry
                if await request.is_disconnected():
                    return
                items = [item for entry in entries for item in entry]
                unfinished -= sum(item["finish_reason"] is not None for item in items)
                yield items
        finally:
            self.cancel(job)


# -----------------------------------------------------------------------------
# the app

def create_app(model, tokenizer, model_name, max_batch=DEFAULTS["max_batch"],
               max_queue=DEFAULTS["max_queue"]):
    """A FastAPI app serving `model` (a GPT in eval mode) with its `tokenizer` under `model_name`;
    the tokenizer normalizes prompts as prepare.py normalized the training text."""
    batcher = Batcher(model, tokenizer, max_batch, max_queue)
    created = int(time.time())
    app = FastAPI(title="Persian GPT",
                  description=f"OpenAI-compatible completions from the checkpoint {model_name}.")
    app.state.batcher = batcher

    # Every error is an OpenAI error object. A malformed or invalid request is a 400, as in the
    # OpenAI API (FastAPI would answer 422, which OpenAI clients do not expect).
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):
        errors = jsonable_encoder(exc.errors())
        if errors[0]["type"] == "json_invalid":
            return APIError(400, f"the body is not valid JSON: {errors[0]['ctx']['error']}").response()
        fields = [".".join(str(part) for part in error["loc"][1:]) or "body" for error in errors]
        message = "; ".join(f"{field}: {error['msg']}" for field, error in zip(fields, errors))
        return APIError(400, message, param=fields[0]).response()

    app.exception_handler(APIError)(lambda request, exc: exc.response())
    app.exception_handler(HTTPException)(  # unknown path, wrong method ...
        lambda request, exc: APIError(exc.status_code, str(exc.detail)).response())
    app.exception_handler(Exception)(
        lambda request, exc: APIError(500, f"{type(exc).__name__}: {exc}", kind="server_error").response())

    def prompt_ids(prompt):
        """A text as sample.py reads it (normalized, after <|endoftext|>), token ids as they are; both
        cropped to the context's last block_size tokens."""
        if isinstance(prompt, str):
            return encode_prompt(prompt, tokenizer, model.config.block_size)[1]
        if max(prompt) >= tokenizer.vocab_size:
            raise APIError(400, f"prompt: token id {max(prompt)} is past the vocabulary's last, "
                                f"{tokenizer.vocab_size - 1}", param="prompt")
        return prompt[-model.config.block_size:]

    async def submit(body):
        """Tokenize the prompts and queue the request as a job."""
        prompts = await asyncio.to_thread(lambda: [prompt_ids(prompt) for prompt in body.prompt])
        job = Job(body, prompts, secrets.randbits(62) if body.seed is None else body.seed)
        if job.rows_needed > max_batch:
            raise APIError(400, f"n x prompts = {job.rows_needed} completions, more than this server decodes "
                                f"at once (max_batch {max_batch})", param="n")
        batcher.submit(job)
        return job

    async def complete(job, request):
        """Wait for a whole job: (choices in the API's shape, completion tokens)."""
        texts, tokens = collections.defaultdict(list), collections.defaultdict(list)  # joined once at the end
        finish_reasons, counts = {}, {}
        async for items in batcher.updates(job, request):
            for item in items:
                i = item["index"]
                texts[i].append(item["text"])
                tokens[i].extend(item["tokens"])
                finish_reasons[i], counts[i] = item["finish_reason"], item["count"]
        choices = [dict(text="".join(texts[i]), index=i, finish_reason=finish_reasons.get(i),
                        logprobs=logprobs_object(tokens[i], 0) if job.body.logprobs is not None else None)
                   for i in range(job.num_choices)]
        return choices, sum(counts.values())

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        """Complete the prompt(s): OpenAI's completions API, streaming with `stream: true`."""
        if body.model not in (None, model_name):
            raise APIError(404, f"model '{body.model}' not found: this server serves '{model_name}'",
                           param="model", code="model_not_found")
        job = await submit(body)
        head = dict(id=f"cmpl-{uuid.uuid4().hex}", object="text_completion", created=int(time.time()),
                    model=model_name)
        prompt_tokens = sum(map(len, job.prompts))

        def usage(completion_tokens):
            return dict(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens)

        if not body.stream:
            choices, completion_tokens = await complete(job, request)
            return dict(head, choices=choices, usage=usage(completion_tokens))

        async def events():
            counts = {}
            try:
                async for items in batcher.updates(job, request):
                    chunks = []  # one event per update, all written at once
                    for item in items:
                        counts[item["index"]] = item["count"]
                        if not item["text"] and item["finish_reason"] is None and body.logprobs is None:
                            continue  # a token that ends inside a character: nothing to show yet
                        logprobs = logprobs_object(item["tokens"], item["offset"]) if body.logprobs is not None else None
                        chunks.append(sse(dict(head, choices=[dict(text=item["text"], index=item["index"],
                                                                   logprobs=logprobs,
                                                                   finish_reason=item["finish_reason"])])))
                    if chunks:
                        yield "".join(chunks)
            except APIError as e:  # the status line has gone: the error is the stream's last event
                yield sse(e.body)
                return
            if body.stream_options and body.stream_options.include_usage:
                yield sse(dict(head, choices=[], usage=usage(sum(counts.values()))))
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/generate")
    async def generate(body: GenerateRequest, request: Request):
        """{"generated_text": the continuation of `prompt`} (the prompt is not repeated), at most
        `max_length` new tokens. Batched with /v1/completions."""
        job = await submit(CompletionRequest(prompt=[body.prompt], max_tokens=body.max_length, top_k=body.top_k,
                                             temperature=body.temperature, top_p=body.top_p))
        choices, _ = await complete(job, request)
        return dict(generated_text=choices[0]["text"])

    @app.get("/v1/models")
    async def models():
        """The one model this server holds, as OpenAI's model list."""
        return dict(object="list", data=[dict(id=model_name, object="model", created=created, owned_by="local")])

    @app.get("/health")
    async def health():
        """The loaded model and how busy the server is."""
        waiting, active = list(batcher.waiting), list(batcher.active.values())
        return dict(status="ok", model=model_name, parameters=model.num_params(), vocab_size=tokenizer.vocab_size,
                    block_size=model.config.block_size, device=str(batcher.decoder.device), max_batch=max_batch,
                    max_queue=max_queue, queued_requests=len(waiting), active_requests=len({id(j) for j, _ in active}),
                    queued_rows=sum(job.rows_needed for job in waiting), active_rows=len(active), **batcher.stats)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE, media_type="text/html; charset=utf-8")

    return app


def main(argv=None):
    config, positional = common.configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if positional:
        raise common.UsageError(f"unexpected argument {positional[0]!r} (use --key=value)")
    if config["max_batch"] < 1 or config["max_queue"] < 1:
        raise common.UsageError("max_batch and max_queue must be at least 1")
    if config["threads"] < 0:
        raise common.UsageError(f"threads must be 0 (PyTorch's default) or more, got {config['threads']}")
    if config["threads"]:
        # A small model's step is a chain of small operations: a second thread saves little of
        # it, and its waiting workers take CPU from the event loop that streams the tokens.
        torch.set_num_threads(config["threads"])
    device = common.resolve_device(config["device"], None)
    model, tokenizer = load_out_dir(config["out_dir"], device, config["quantize"])  # in eval mode
    model_name = os.path.basename(os.path.normpath(config["out_dir"]))
    app = create_app(model, tokenizer, model_name, config["max_batch"], config["max_queue"])
    print(f"serving {model_name} on {device} at http://{config['host']}:{config['port']}/ (API docs at /docs)",
          flush=True)
    uvicorn.run(app, host=config["host"], port=config["port"], log_level="warning")


if __name__ == "__main__":
    common.run(main)
