"""
Serve a trained checkpoint over HTTP: an OpenAI-compatible completions API and a small
right-to-left Persian page to try the model in a browser.

    pip install -r requirements-serve.txt
    python serve.py --out_dir=out-fawiki-small
    # page: http://127.0.0.1:8000/   API docs: http://127.0.0.1:8000/docs

    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \
         -d '{"prompt": "تهران پایتخت", "max_tokens": 40, "stream": true}'

Any OpenAI client works by pointing its base_url at http://127.0.0.1:8000/v1. Generation is
sample.py's: the same prompt normalisation and cropping, the same sampling, the same UTF-8-safe
streaming. One model serves every request: requests take turns on one model thread, one token
at a time, each with its own KV cache and random generator, so they cannot disturb each other
and a long completion does not hold up a short one.

On a CPU that other programs keep busy, try OMP_NUM_THREADS=1 python serve.py ...: a small
model's steps are too short to share between threads, and threads waiting for a busy core to
join them can make every token many times slower.
"""

import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import torch

import common
from model import load_checkpoint
from sample import encode_prompt, generate, stream_text

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field, field_validator
    from pydantic_core import PydanticCustomError
except ImportError as e:  # the serving extra is optional: the rest of the project never needs it
    if __name__ != "__main__":
        raise
    sys.exit(f"error: serve.py needs FastAPI and uvicorn ({e.name} is missing): "
             f"pip install -r requirements-serve.txt")

DEFAULTS = dict(
    out_dir="out-fawiki-small",  # folder holding ckpt.pt (its tokenizer is stored inside it)
    host="127.0.0.1",  # loopback only; 0.0.0.0 would open the server to the whole network
    port=8000,  # TCP port to listen on
    device="cpu",  # cpu, cuda, cuda:1, mps ...
)

# bounds on a request: enough for any real use, small enough that no request can hog the server
MAX_TOKENS = 4096  # tokens generated per completion
MAX_CHOICES = 8  # completions per request (n)
MAX_PROMPT_CHARS = 20_000  # prompt length; a prompt longer than the context is cropped to its end
MAX_STOPS = 4  # stop sequences per request, as in the OpenAI API
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "index.html")


# -----------------------------------------------------------------------------
# the request, validated field by field

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False  # end the stream with one chunk holding the token counts


class CompletionRequest(BaseModel):
    """The OpenAI completions request, plus top_k and repetition_penalty as in sample.py.

    Fields the model cannot honour (logprobs, echo, suffix, ...) are refused rather than
    silently ignored, and so is any misspelt field."""
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None  # optional: this server holds one model
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)  # or a list of one string; "" = a fresh document
    max_tokens: int = Field(16, ge=1, le=MAX_TOKENS)
    temperature: float = Field(1.0, gt=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=65536)  # 0 = no limit
    repetition_penalty: float = Field(1.0, gt=0, le=10)  # 1 = off
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: list[Annotated[str, Field(min_length=1)]] = Field([], max_length=MAX_STOPS)  # or one string
    seed: int | None = Field(None, ge=0, le=2**63 - 1)  # choice i samples with seed + i
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def one_prompt(cls, prompt):
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise PydanticCustomError("one_prompt", "give one prompt: a string, or a list holding one string")
            return prompt[0]
        return prompt

    @field_validator("stop", mode="before")
    @classmethod
    def stop_list(cls, stop):
        if stop is None:
            return []
        return [stop] if isinstance(stop, str) else stop


# -----------------------------------------------------------------------------
# text helpers

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


def sse(payload):
    """One server-sent event in the format of the OpenAI streaming API."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def error_response(status, message, param=None, code=None, **extra):
    """An error shaped as the OpenAI API shapes them, so its clients show the message."""
    error = dict(message=message, type="invalid_request_error", param=param, code=code)
    return JSONResponse(status_code=status, content=dict(error=error, **extra))


# -----------------------------------------------------------------------------
# the app

def create_app(model, tokenizer, model_name, normalization=None):
    """A FastAPI app serving `model` (a GPT in eval mode) with its `tokenizer` under `model_name`;
    prompts are normalized with `normalization`, the checkpoint's record of prepare.py's options."""
    device = next(model.parameters()).device
    # One thread runs the model, so forward passes never overlap. Not a pool: PyTorch gives every
    # calling thread its own team of OpenMP workers, and idle teams spinning on a few cores made
    # each token about 20 times slower.
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    stats = dict(active_requests=0, generated_tokens=0)
    created = int(time.time())
    app = FastAPI(title="Persian GPT",
                  description=f"OpenAI-compatible completions from the checkpoint {model_name}.")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):
        errors = exc.errors()
        fields = [".".join(str(part) for part in error["loc"][1:]) or "body" for error in errors]
        message = "; ".join(f"{field}: {error['msg']}" for field, error in zip(fields, errors))
        return error_response(422, message, param=fields[0], detail=jsonable_encoder(errors))

    def completion_pieces(prompt_ids, body, seed):
        """Yield (text, finish_reason, completion_tokens) for one completion as it is generated.

        finish_reason stays None until the last item: "stop" when the model ends the document or
        a stop sequence appears (which is left out of the text), "length" after max_tokens."""
        generator = torch.Generator(device=device).manual_seed(seed)
        token_count = 0

        def counted(token_ids):
            nonlocal token_count
            for token_id in token_ids:
                token_count += 1
                stats["generated_tokens"] += 1
                yield token_id

        token_ids = generate(model, prompt_ids, body.max_tokens, body.temperature, body.top_k, body.top_p,
                             body.repetition_penalty, generator=generator, stop_ids=(tokenizer.eot_id,))
        pending = ""
        for piece in stream_text(tokenizer, counted(token_ids)):
            ready, pending, stopped = cut_at_stop(pending + piece, body.stop)
            if stopped:
                yield ready, "stop", token_count
                return
            if ready:
                yield ready, None, token_count
        yield pending, "stop" if token_count < body.max_tokens else "length", token_count

    async def while_connected(request, pieces):
        """Run a completion one piece at a time on the model thread; stop when the client leaves.

        Every request queues its steps on the one model thread, so concurrent requests take turns
        token by token, each with its own KV cache and generator inside its `pieces`."""
        loop = asyncio.get_running_loop()
        stats["active_requests"] += 1
        try:
            while not await request.is_disconnected():
                item = await loop.run_in_executor(model_thread, next, pieces)
                yield item
                if item[1] is not None:
                    return
        finally:
            model_thread.submit(pieces.close)  # queued after any step still running; frees the KV cache
            stats["active_requests"] -= 1

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        """Complete the prompt: OpenAI's completions API, streaming with `stream: true`."""
        if body.model not in (None, model_name):
            return error_response(404, f"model '{body.model}' not found: this server serves '{model_name}'",
                                  param="model", code="model_not_found")
        _, prompt_ids = await asyncio.to_thread(encode_prompt, body.prompt, tokenizer,
                                                 model.config.block_size, normalization)
        seed = secrets.randbits(63) if body.seed is None else body.seed
        head = dict(id=f"cmpl-{uuid.uuid4().hex}", object="text_completion", created=int(time.time()),
                    model=model_name)

        def usage(completion_tokens):
            return dict(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens,
                        total_tokens=len(prompt_ids) + completion_tokens)

        def choice(index, text, finish_reason):
            return dict(text=text, index=index, logprobs=None, finish_reason=finish_reason)

        if body.stream:
            async def events():
                completion_tokens = 0
                for index in range(body.n):
                    token_count = 0
                    async for text, finish_reason, token_count in while_connected(
                            request, completion_pieces(prompt_ids, body, seed + index)):
                        yield sse(dict(head, choices=[choice(index, text, finish_reason)]))
                    completion_tokens += token_count
                if body.stream_options and body.stream_options.include_usage:
                    yield sse(dict(head, choices=[], usage=usage(completion_tokens)))
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

        choices, completion_tokens = [], 0
        for index in range(body.n):
            text, finish_reason, token_count = "", None, 0
            async for piece, finish_reason, token_count in while_connected(
                    request, completion_pieces(prompt_ids, body, seed + index)):
                text += piece
            choices.append(choice(index, text, finish_reason))
            completion_tokens += token_count
        return dict(head, choices=choices, usage=usage(completion_tokens))

    @app.get("/v1/models")
    async def models():
        """The one model this server holds, as OpenAI's model list."""
        return dict(object="list", data=[dict(id=model_name, object="model", created=created, owned_by="local")])

    @app.get("/health")
    async def health():
        """The loaded model and how busy the server is."""
        return dict(status="ok", model=model_name, parameters=model.num_params(), vocab_size=tokenizer.vocab_size,
                    block_size=model.config.block_size, device=str(device), **stats)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE, media_type="text/html; charset=utf-8")

    return app


def main(argv=None):
    config, positional = common.configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if positional:
        raise common.UsageError(f"unexpected argument {positional[0]!r} (use --key=value)")
    ckpt_path = os.path.join(config["out_dir"], "ckpt.pt")
    if not os.path.isfile(ckpt_path):
        raise common.UsageError(f"no checkpoint at {ckpt_path} (train one with train.py, or set --out_dir)")
    model, tokenizer, ckpt = load_checkpoint(ckpt_path, config["device"])  # in eval mode
    model_name = os.path.basename(os.path.normpath(config["out_dir"]))
    app = create_app(model, tokenizer, model_name, ckpt.get("normalization"))
    print(f"serving {model_name} at http://{config['host']}:{config['port']}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=config["host"], port=config["port"], log_level="warning")


if __name__ == "__main__":
    common.run(main)
