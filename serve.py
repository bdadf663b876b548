"""
Serve a trained checkpoint over HTTP: an OpenAI-compatible completions API and a small
right-to-left Persian page to try the model in a browser. Python 3.10 or newer.

    pip install -r requirements-serve.txt
    python serve.py --out_dir=out-fawiki-small
    # page: http://127.0.0.1:8000/   API docs: http://127.0.0.1:8000/docs

    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \
         -d '{"prompt": "تهران پایتخت", "max_tokens": 40, "stream": true}'

Any OpenAI client works with its base_url at http://127.0.0.1:8000/v1; the page streams from the
same route. Generation is sample.py's (the same prompt normalisation, sampling and UTF-8-safe
text), batched continuously: one model thread steps a sample.Decoder of --max_batch rows, a row
per prompt and choice of any request; new prompts join at the next step, a row leaves as soon as
it ends, and each row gets the tokens it would get alone (but for float rounding, see sample.Decoder).
Requests that find too few free rows wait in a queue of --max_queue; beyond it the answer is 503.
The model runs on one PyTorch thread (--threads), which serves a small model on a CPU better than
one thread per core: see main.

A request goes: its body (at most MAX_BODY_BYTES, body_limit) -> CompletionRequest, field by
field -> Server.submit: prompts tokenized, a Job queued -> Server.run, the model thread: Decoder
rows, each step's tokens read by their Choice into updates -> the job's asyncio queue ->
Server.completions: one response, or a stream of server-sent events.

Text is normalized as the training text was, prompts and stop sequences alike (a stop written
with Arabic yeh/kaf or digits matches the text the model writes). echo returns a text prompt as
the client sent it, so text[len(prompt):] is the completion; its logprobs list the tokens the
model read, each at the offset in that prompt of the characters it was read from.
"""

import asyncio
import collections
import contextlib
import itertools
import json
import os
import secrets
import sys
import threading
import time
from typing import Annotated, Literal

import torch

import common
from model import resolve_device
from sample import Decoder, encode_prompt, load_out_dir, read_token, score_prompt, utf8_decoder

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
    from starlette.exceptions import HTTPException
except ImportError as e:  # the serving extra is optional: the rest of the project never needs it
    if __name__ != "__main__":
        raise
    sys.exit(f"error: serve.py needs FastAPI and uvicorn ({e.name} is missing): pip install -r requirements-serve.txt")

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
MAX_BODY_BYTES = 1 << 20  # the request body, refused with 413 before it is parsed
MAX_TOKENS = 4096  # tokens generated per completion
MAX_CHOICES = 8  # completions per prompt (n)
MAX_PROMPTS = 64  # prompts per request
MAX_PROMPT_LENGTH = 20_000  # characters or token ids per prompt; the model reads the last block_size tokens
MAX_STOPS = 4  # stop sequences per request, as in the OpenAI API
MAX_LOGPROBS = 5  # alternatives per token in logprobs, as in the OpenAI API
MAX_LOGIT_BIAS = 300  # tokens in logit_bias
QUOTED_CHARS = 40  # of a client's string quoted in an error message
DISCONNECT_POLL = 0.25  # seconds between checks that a waiting client is still connected
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "index.html")
# the request's fields that are a Decoder row's settings, under the names Decoder.add takes
DECODER_SETTINGS = {"temperature", "top_k", "top_p", "repetition_penalty", "frequency_penalty", "presence_penalty",
                    "logit_bias"}


# -----------------------------------------------------------------------------
# requests, validated field by field

def one_or_more(value):
    """prompt and stop take one item or a list of them: a string, or a list of token ids, is one."""
    one = isinstance(value, str) or isinstance(value, list) and value and isinstance(value[0], int)
    return [value] if one else value


OneOrMore = BeforeValidator(one_or_more)
TextPrompt = Annotated[str, Field(max_length=MAX_PROMPT_LENGTH)]  # "" = a fresh document
TokenPrompt = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_PROMPT_LENGTH)]
TokenId = Annotated[int, Field(ge=0, strict=False)]  # as a JSON object's key, a string of digits
Stop = Annotated[str, Field(min_length=1)]  # a stop sequence, normalized as prompts are


class CompletionRequest(BaseModel):
    """The OpenAI completions request, plus top_k and repetition_penalty as in sample.py.
    best_of is accepted when it equals n (every completion made is returned) and user is ignored;
    fields the model cannot honour (suffix, ...) are refused, and so is any misspelt one."""
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None  # optional: this server holds one model
    # texts or, as the OpenAI API allows, lists of token ids, read as given; or one of either
    prompt: Annotated[list[TextPrompt | TokenPrompt], OneOrMore] = Field([""], min_length=1, max_length=MAX_PROMPTS)
    max_tokens: int = Field(16, ge=0, le=MAX_TOKENS)  # 0 with echo and logprobs: score the prompt only
    temperature: float = Field(1.0, ge=0, le=2)  # 0 = greedy
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=65536)  # 0 = no limit
    repetition_penalty: float = Field(1.0, gt=0, le=10)  # 1 = off
    # as OpenAI defines them: a token's logit loses frequency_penalty for each time the row has
    # generated it, and presence_penalty once if it has; logit_bias adds to given tokens' logits
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[TokenId, Annotated[float, Field(ge=-100, le=100)]] = Field({}, max_length=MAX_LOGIT_BIAS)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES)  # only n
    stop: Annotated[list[Stop] | None, OneOrMore] = Field(None, max_length=MAX_STOPS)  # or one
    seed: int | None = Field(None, ge=0, le=2**62)  # choice i samples with seed + i
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # log-probs of each token and its top alternatives
    echo: bool = False  # the prompt as sent comes back before the completion (with its log-probs if asked)
    stream: bool = False
    stream_options: dict[Literal["include_usage"], bool] | None = None  # include_usage: end with the token counts
    user: str | None = None  # the client's end-user, for OpenAI's abuse monitoring: ignored


class APIError(HTTPException):
    """An error answered as the OpenAI API shapes them, so its clients show the message."""

    def __init__(self, status, message, param=None, code=None, kind="invalid_request_error"):
        super().__init__(status, message)
        self.body = dict(error=dict(message=message, type=kind, param=param, code=code))


def error_response(request, exc):
    """Any HTTP error as an OpenAI error object: ours, or the framework's (unknown path, wrong method)."""
    error = exc if isinstance(exc, APIError) else APIError(exc.status_code, str(exc.detail))
    return JSONResponse(error.body, error.status_code)


def clipped(text):
    """A client's string as an error message may quote it: its first QUOTED_CHARS characters."""
    return text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "…"


def invalid_request(request, exc):
    """A malformed or invalid request is a 400 naming the fields at fault, as in the OpenAI API
    (FastAPI would answer 422, which OpenAI clients do not expect)."""
    errors = exc.errors()
    if errors[0]["type"] == "json_invalid":
        return error_response(request, APIError(400, f"the body is not valid JSON: {errors[0]['ctx']['error']}"))
    fields = [clipped(".".join(str(part) for part in error["loc"][1:])) or "body" for error in errors]
    message = "; ".join(f"{field}: {error['msg']}" for field, error in zip(fields, errors))
    return error_response(request, APIError(400, message, param=fields[0]))


def body_limit(app):
    """ASGI middleware around `app`: a request body over MAX_BODY_BYTES is a 413 as soon as that is
    known, from its Content-Length or (a chunked body has none) from the bytes arrived, before it
    is parsed."""

    async def limited(scope, receive, send):
        declared, received = int(dict(scope.get("headers", ())).get(b"content-length", b"0")), 0

        async def counted():
            nonlocal received
            message = await receive() if declared <= MAX_BODY_BYTES else {}  # over: read nothing
            received += len(message.get("body", b""))
            if max(declared, received) > MAX_BODY_BYTES:
                raise APIError(413, f"the request body is over {MAX_BODY_BYTES} bytes")
            return message
        await app(scope, counted, send)
    return limited


# -----------------------------------------------------------------------------
# text and log-probabilities

def cut_at_stop(text, stops, final=False):
    """Split pending text into (ready, held, stopped) against the stop sequences.

    Up to the first stop sequence, text is ready to send and generation ends. Otherwise the
    longest ending of the text that could begin a stop sequence is held back until the next
    piece decides it, so a client never receives the start of a stop sequence; unless the text
    is final (nothing can follow it)."""
    hits = [position for position in (text.find(stop) for stop in stops) if position >= 0]
    if hits:
        return text[:min(hits)], "", True
    if final:
        return text, "", False
    held = max((size for stop in stops for size in range(1, len(stop)) if text.endswith(stop[:size])), default=0)
    return text[:len(text) - held], text[len(text) - held:], False


def source_offsets(tokenizer, sent, read):
    """Where each character of `read` (tokenizer.normalize(sent)) comes from in `sent`, then
    len(sent). Normalization maps each character to itself, to others or to none, and whitespace
    to single spaces: so `sent` is spelt out as the characters each of its own gives (itself where
    that is none, as for a ZWNJ, which only its neighbours can keep), and each character read is
    matched to the next one given (a space to any whitespace)."""
    forms = {char: tokenizer.normalize(char, tidy_spaces=False) for char in set(sent)}
    # one iterator for all the characters read: each match moves it past the characters it skips
    given = ((char, i) for i, source in enumerate(sent) for char in forms[source] or source)
    offsets = [next((i for form, i in given if form == char or form.isspace() and char.isspace()), len(sent))
               for char in read]  # nothing left gives it: the end
    return offsets + [len(sent)]


def read_prompts(prompts, tokenizer, block_size):
    """[(token ids, the text sent or None)] of a request's prompts: a text as sample.py reads it
    (normalized, after <|endoftext|>), token ids as they are; either cropped to the context."""
    return [(encode_prompt(prompt, tokenizer, block_size)[1], prompt) if isinstance(prompt, str)
            else (prompt[-block_size:], None) for prompt in prompts]


def echoed(model, tokenizer, prompt_ids, sent, top_n):
    """(text, token records as sample.read_token's, text_offset) of an echoed prompt, with log-probs if
    top_n is not None (the first token has none: nothing comes before it). A text prompt comes back
    as the client sent it, its tokens (as the model read them: normalized, cropped to the context)
    at the offsets of the characters they were read from; token ids (sent None) come back as the
    text of the ids the model read."""
    utf8 = utf8_decoder()
    scores = score_prompt(model, prompt_ids, top_n) if top_n is not None else itertools.repeat((None, None))
    records = [read_token(tokenizer, utf8, token_id, logprob, top)
               for token_id, (logprob, top) in zip(prompt_ids, itertools.chain([(None, None)], scores))]
    pieces = [piece for piece, _, _ in records]
    starts = list(itertools.accumulate(map(len, pieces), initial=0))[:-1]
    if sent is None:
        return "".join(pieces), records, starts
    normalized = tokenizer.normalize(sent)
    source, cropped = source_offsets(tokenizer, sent, normalized), max(len(normalized) - sum(map(len, pieces)), 0)
    return sent, records, [source[min(cropped + start, len(normalized))] for start in starts]


def sse(payload):
    """One server-sent event in the format of the OpenAI streaming API."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def joined(index, updates, show_logprobs):
    """A whole choice from its updates, in order: their texts and logprobs end to end."""
    return dict(text="".join(update["text"] for update in updates), index=index,
                logprobs={key: [value for update in updates for value in update["logprobs"][key]]
                          for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
                if show_logprobs else None, finish_reason=updates[-1]["finish_reason"] if updates else None)


# -----------------------------------------------------------------------------
# continuous batching, and the routes

class Choice:
    """One completion: where its text stands and the token records read but not sent yet."""

    def __init__(self, index, stops, show_logprobs, utf8_state):
        self.index, self.stops, self.show_logprobs = index, stops, show_logprobs
        self.offset = 0  # characters of the choice's text sent so far
        self.utf8 = utf8_decoder()  # goes on from the prompt's (utf8_state): it may end inside a character
        self.utf8.setstate(utf8_state)
        self.unsent = []  # token records whose text may still begin a stop sequence
        self.stopped = False  # whether a stop sequence has ended the text

    def update(self, records, finish_reason=None, text=None, offsets=None):
        """What the client receives next: the choice in the API's shape, for the text of these token
        records, which follow one another from where the text stands (unless text and offsets say)."""
        pieces = [piece for piece, _, _ in records]
        text = "".join(pieces) if text is None else text
        offsets = list(itertools.accumulate(map(len, pieces), initial=self.offset))[:-1] if offsets is None else offsets
        self.offset += len(text)
        logprobs = dict(tokens=pieces, token_logprobs=[logprob for _, logprob, _ in records],
                        top_logprobs=[top for *_, top in records], text_offset=offsets) if self.show_logprobs else None
        return dict(text=text, index=self.index, logprobs=logprobs, finish_reason=finish_reason)

    def read(self, tokenizer, token_id, logprob, top, finished):
        """Take one Decoder event; return the update it makes for the client, or None. Text goes
        out in whole tokens; the token holding a stop sequence is cut before it, and the choice is
        stopped. The <|endoftext|> that ends the document (token_id None) is a token of no text, so
        the logprobs list every token the model chose, as log-likelihood clients expect of echo.
        The chosen token is always among its alternatives, as in the OpenAI API (logprobs 0 too)."""
        self.unsent.append(read_token(tokenizer, self.utf8, tokenizer.eot_id if token_id is None else token_id,
                                      logprob, (top or []) if self.show_logprobs else None, final=finished))
        ready, _, self.stopped = cut_at_stop("".join(piece for piece, _, _ in self.unsent), self.stops, finished)
        ends = list(itertools.accumulate((len(piece) for piece, _, _ in self.unsent), initial=0))
        count = sum(end <= len(ready) for end in ends[1:])  # the records whose text is ready
        size = ends[count]  # the size of their text
        if self.stopped and size < len(ready):  # the record that holds the stop sequence, cut before it
            cut, chosen, top = ready[size:], *self.unsent[count][1:]
            # its alternatives list it first (read_token): now under its cut text, which comes first
            top = top and {cut: chosen, **{text: value for text, value in list(top.items())[1:] if text != cut}}
            self.unsent[count] = [cut, chosen, top]
            count += 1
        records, self.unsent = self.unsent[:count], self.unsent[count:]
        reason = "stop" if self.stopped or token_id is None else "length" if finished else None
        # nothing to send for a token that ends inside a character, unless its logprobs are shown
        return self.update(records, reason) if reason or size or records and self.show_logprobs else None


class Job:
    """One request: its prompts [(token ids, the text sent or None)], stop sequences and seed, and
    the asyncio queue its updates go to. The model thread runs it until every choice has ended or
    it is cancelled."""

    def __init__(self, body, prompts, stops, seed):
        self.body, self.prompts, self.stops, self.seed = body, prompts, stops, seed
        self.num_choices = len(prompts) * body.n  # choice i of prompt p is choice p * n + i
        self.rows_needed = self.num_choices if body.max_tokens else 0
        self.completion_tokens = 0  # counted by the model thread
        self.loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()  # of update lists or an APIError
        self.cancelled = False

    async def updates(self, request):
        """Yield the job's updates until every choice has ended: a list of all that have arrived
        since the last (one write for a client that has fallen behind, not one per step). Stop
        early if the client hangs up. Either way the job is then cancelled."""
        unfinished = self.num_choices
        try:
            while unfinished and not await request.is_disconnected():
                # an empty entry wakes this up when no update comes, to check the client is still there
                wake = self.loop.call_later(DISCONNECT_POLL, self.queue.put_nowait, [])
                entries = [await self.queue.get()]
                wake.cancel()
                entries += [self.queue.get_nowait() for _ in range(self.queue.qsize())]
                errors = [entry for entry in entries if isinstance(entry, APIError)]
                if errors:
                    raise errors[0]
                items = [item for entry in entries for item in entry]
                unfinished -= sum(item["finish_reason"] is not None for item in items)
                yield items
        finally:
            self.cancelled = True  # the model thread drops its rows before its next step

    def usage(self):
        prompt_tokens = sum(len(ids) for ids, _ in self.prompts)
        return dict(prompt_tokens=prompt_tokens, completion_tokens=self.completion_tokens,
                    total_tokens=prompt_tokens + self.completion_tokens)


def send(updates):
    """From the model thread: hand each job of {job: a list of updates, or an APIError} its entry,
    with one call into each event loop for all its jobs (waking a loop costs more than the
    hand-off itself, and a step has an update for every row)."""
    for loop in {job.loop for job in updates}:
        with contextlib.suppress(RuntimeError):  # a loop closed (its server has stopped) has no one to tell
            loop.call_soon_threadsafe(deliver, {job: entry for job, entry in updates.items() if job.loop is loop})


def deliver(updates):
    """In the event loop: put each job's entry into its queue."""
    for job, entry in updates.items():
        job.queue.put_nowait(entry)


class Server:
    """The model thread, which admits waiting jobs into free Decoder rows and runs one step for
    all rows, and the routes, which check, tokenize and queue each request as a Job and answer
    with its updates, as one response or as a stream."""

    def __init__(self, model, tokenizer, model_name, max_batch, max_queue):
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.max_batch, self.max_queue, self.created = max_batch, max_queue, int(time.time())
        self.decoder = Decoder(model, max_batch)
        self.waiting = []  # jobs not yet in the batch, first come first
        self.active = {}  # Decoder row -> (job, choice)
        self.stats = dict(generated_tokens=0, decode_steps=0)
        self.wakeup = threading.Condition()
        threading.Thread(target=self.run, name="model", daemon=True).start()

    # the model thread

    def run(self):
        """Forever: drop the jobs whose clients have gone and the rows a stop sequence has ended,
        admit the waiting jobs that fit (first come, first served), step the batch. It sleeps only
        when no job waits or runs."""
        while True:
            with self.wakeup:
                self.wakeup.wait_for(lambda: self.waiting or self.active)
                self.waiting = [job for job in self.waiting if not job.cancelled]
                for row in [row for row, (job, choice) in self.active.items() if job.cancelled or choice.stopped]:
                    self.decoder.remove(row)
                    del self.active[row]
                # first come, first served: the first jobs whose rows, added up in order, fit into the free ones
                taken = itertools.accumulate(job.rows_needed for job in self.waiting)
                admitted = sum(rows <= self.decoder.free_rows for rows in taken)
                jobs, self.waiting = self.waiting[:admitted], self.waiting[admitted:]
            try:
                for job in jobs:
                    self.start(job)
                if self.active:
                    self.step()
            except Exception as e:  # out of memory, ...: the jobs in the batch fail, the server goes on
                failed = {*jobs, *(job for job, _ in self.active.values())}
                self.active.clear()
                self.decoder = Decoder(self.model, self.max_batch)  # first: a client told of the error may retry
                error = APIError(500, f"generation failed: {common.first_line(e, name=True)}", kind="server_error")
                send(dict.fromkeys(failed, error))

    def start(self, job):
        """Send each choice its echoed prompt, then read the prompts into free rows."""
        body, updates = job.body, []
        # each row's settings, as sample.Decoder.add takes them
        settings = dict(body.model_dump(include=DECODER_SETTINGS), max_new_tokens=body.max_tokens,
                        top_logprobs=body.logprobs or 0, stop_ids=(self.tokenizer.eot_id,))
        for p, (prompt_ids, sent) in enumerate(job.prompts):
            text, records, offsets = (echoed(self.model, self.tokenizer, prompt_ids, sent, body.logprobs)
                                      if body.echo else ("", [], []))
            prompt_utf8 = utf8_decoder()  # token ids may end inside a character, which the completion finishes
            for token_id in prompt_ids if sent is None else ():  # a text prompt ends with a whole character
                read_token(self.tokenizer, prompt_utf8, token_id)
            for index in range(p * body.n, (p + 1) * body.n):
                choice = Choice(index, job.stops, body.logprobs is not None, prompt_utf8.getstate())
                if body.echo or not body.max_tokens:
                    updates.append(choice.update(records, None if body.max_tokens else "length", text, offsets))
                if body.max_tokens:
                    generator = torch.Generator(device=self.decoder.device).manual_seed(job.seed + index)
                    row = self.decoder.add(prompt_ids, **settings, generator=generator)
                    self.active[row] = (job, choice)
        send({job: updates})

    def step(self):
        """One forward pass for every row; updates go to their jobs; an ended row leaves at once."""
        updates = collections.defaultdict(list)
        self.stats["decode_steps"] += 1
        for row, token_id, logprob, top, finished in self.decoder.step():
            job, choice = self.active[row]
            self.stats["generated_tokens"] += token_id is not None
            job.completion_tokens += 1  # <|endoftext|> too: the model chose it
            if update := choice.read(self.tokenizer, token_id, logprob, top, finished):
                updates[job].append(update)
            if finished:  # the Decoder has freed its row
                del self.active[row]
        send(updates)

    # the routes

    async def submit(self, body):
        """Refuse what the model cannot honour, tokenize the prompts and stop sequences as the
        training text was, and queue the request (unless max_queue requests already wait)."""
        if body.model not in (None, self.model_name):
            raise APIError(404, f"model {clipped(body.model)!r} not found: this server serves {self.model_name!r}",
                           param="model", code="model_not_found")
        if body.best_of not in (None, body.n):
            raise APIError(400, "best_of: must equal n, since every completion made is returned", param="best_of")
        for field, ids in (("prompt", [i for prompt in body.prompt if isinstance(prompt, list) for i in prompt]),
                           ("logit_bias", body.logit_bias)):
            if max(ids, default=0) >= self.tokenizer.vocab_size:
                raise APIError(400, f"{field}: token ids must be below the vocabulary's size, "
                                    f"{self.tokenizer.vocab_size}", param=field)
        prompts = await asyncio.to_thread(read_prompts, body.prompt, self.tokenizer, self.model.config.block_size)
        # a stop sequence as the model would write it; one that normalizes to nothing never comes
        stops = list(filter(None, (self.tokenizer.normalize(stop, tidy_spaces=False) for stop in body.stop or ())))
        job = Job(body, prompts, stops, secrets.randbits(62) if body.seed is None else body.seed)
        if job.rows_needed > self.max_batch:
            raise APIError(400, f"n x prompts = {job.rows_needed} completions, more than this server decodes "
                                f"at once (max_batch {self.max_batch})", param="n")
        with self.wakeup:
            if len(self.waiting) >= self.max_queue:
                raise APIError(503, f"the server is busy: {self.max_queue} requests are already waiting; retry later",
                               code="queue_full", kind="server_error")
            self.waiting.append(job)
            self.wakeup.notify()
        return job

    async def events(self, job, head, request):
        """The job as server-sent events: an event per update, the usage if asked, then [DONE]."""
        try:
            async for items in job.updates(request):
                if items:
                    yield "".join(sse(dict(head, choices=[item])) for item in items)  # all written at once
        except APIError as e:  # the status line has gone: the error is the stream's last event
            yield sse(e.body)
            return
        if (job.body.stream_options or {}).get("include_usage"):
            yield sse(dict(head, choices=[], usage=job.usage()))
        yield "data: [DONE]\n\n"

    async def completions(self, body: CompletionRequest, request: Request):
        """Complete the prompt(s): OpenAI's completions API, streaming with `stream: true`. Text is
        normalized as the training text was, prompts and stop sequences alike. With echo, a text
        prompt comes back as it was sent (text[len(prompt):] is the completion) and its logprobs
        list the tokens the model read, at the offsets of the characters they were read from."""
        job = await self.submit(body)
        head = dict(id=f"cmpl-{secrets.token_hex(16)}", object="text_completion", created=int(time.time()),
                    model=self.model_name)
        if body.stream:
            return StreamingResponse(self.events(job, head, request), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        updates = collections.defaultdict(list)  # choice index -> its updates, joined once all have come
        async for items in job.updates(request):
            for item in items:
                updates[item["index"]].append(item)
        choices = [joined(i, updates[i], body.logprobs is not None) for i in range(job.num_choices)]
        return dict(head, choices=choices, usage=job.usage())

    async def models(self):
        """The one model this server holds, as OpenAI's model list."""
        return dict(object="list", data=[dict(id=self.model_name, object="model", created=self.created,
                                              owned_by="local")])

    async def health(self):
        """The loaded model and how busy the server is."""
        waiting, active = list(self.waiting), list(self.active.values())
        return dict(status="ok", model=self.model_name, parameters=self.model.num_params(),
                    vocab_size=self.tokenizer.vocab_size, block_size=self.model.config.block_size,
                    device=str(self.decoder.device), max_batch=self.max_batch, max_queue=self.max_queue,
                    queued_requests=len(waiting), active_requests=len({job for job, _ in active}),
                    queued_rows=sum(job.rows_needed for job in waiting), active_rows=len(active), **self.stats)


def warm_up(model, max_batch):
    """Run each kind of step the server will take (prompts of one and of several tokens, a step of
    one row and of several, echo's scoring of one position and of several), so that a compiled model
    (int8) compiles them now, not while a client waits."""
    decoder = Decoder(model, min(2, max_batch))
    for length in range(decoder.max_rows):  # rows that end one step apart: two rows, then one
        decoder.add([0] * (3 - length), greedy=True, max_new_tokens=2 + length)
    while len(decoder):
        decoder.step()
    for length in (2, 3):  # score_prompt: a forward without the KV cache
        score_prompt(model, [0] * length, 1)


def create_app(model, tokenizer, model_name, max_batch=DEFAULTS["max_batch"], max_queue=DEFAULTS["max_queue"]):
    """A FastAPI app serving `model` (a GPT in eval mode) with its `tokenizer` under `model_name`.
    Every error is an OpenAI error object (APIError)."""
    server = Server(model, tokenizer, model_name, max_batch, max_queue)
    # HTTPException: ours, and unknown path, wrong method ...
    app = FastAPI(title="Persian GPT", description=f"OpenAI-compatible completions from the checkpoint {model_name}.",
                  exception_handlers={RequestValidationError: invalid_request, HTTPException: error_response})
    app.state.server = server
    app.add_middleware(body_limit)
    app.exception_handler(Exception)(lambda request, exc: error_response(
        request, APIError(500, common.first_line(exc, name=True), kind="server_error")))
    app.post("/v1/completions")(server.completions)
    app.get("/v1/models")(server.models)
    app.get("/health")(server.health)
    app.get("/", include_in_schema=False, response_class=FileResponse)(lambda: PAGE)  # the page, as text/html
    return app


def main(argv=None):
    config = common.parse_config(DEFAULTS, argv)
    if config["max_batch"] < 1 or config["max_queue"] < 1:
        raise common.UsageError("max_batch and max_queue must be at least 1")
    if config["threads"] < 0:
        raise common.UsageError(f"threads must be 0 (PyTorch's default) or more, got {config['threads']}")
    if config["threads"]:
        # A small model's step is a chain of small operations: a second thread saves little of
        # it, and its waiting workers take CPU from the event loop that streams the tokens.
        torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    model, tokenizer = load_out_dir(config["out_dir"], device, config["quantize"])  # in eval mode
    model_name = os.path.basename(os.path.normpath(config["out_dir"]))
    warm_up(model, config["max_batch"])
    app = create_app(model, tokenizer, model_name, config["max_batch"], config["max_queue"])
    print(f"serving {model_name} on {device} at http://{config['host']}:{config['port']}/ (API docs at /docs)",
          flush=True)
    uvicorn.run(app, host=config["host"], port=config["port"], log_level="warning")


if __name__ == "__main__":
    common.run(main)
