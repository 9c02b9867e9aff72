"""Serving recipe: a checkpoint's rewards over HTTP (FastAPI + uvicorn), for OpenRLHF, verl and any
JSON client.

    pipeline serve ckpt/ --host 127.0.0.1 --port 8000 [--cache embeddings/] [--normalize] [--module planner]
    curl -s localhost:8000/health
    curl -s localhost:8000/score -H 'Content-Type: application/json' -d '{"items": [{"context": "Task: ...", "module": "planner", "module_text": "[Round 1]\\n<plan>...</plan>"}]}'
    curl -s localhost:8000/get_reward -H 'Content-Type: application/json' -d '{"query": ["<prompt><response>"], "prompts": ["<prompt>"], "labels": ["planner"]}'

Endpoints:
  GET  /health      {"status": "ok", "modules": [...], "normalized": ..., "reward": what it is made of, in words,
                    "blend": its weights by part (null: the heads alone), limits, and counters: requests, rows, scorer_calls}
  POST /score       {"items": [{"context", "module", "module_text"}, ...]} -> {"rewards": [...], "normalized": bool};
                    the rewards are exactly what `pipeline.rewards.RewardScorer.score` returns for the same rows;
                    a checkpoint of the rounds view adds "round_rewards": per item, its reward split over
                    the module text's rounds (`RewardScorer.rewards`).
  POST /get_reward  OpenRLHF's remote reward model (`--remote_rm_url http://HOST:PORT/get_reward`):
                    {"query": [...], "prompts": [...], "labels": [...]} ->
                    {"rewards": [...], "scores": [...], "extra_logs": {"raw_reward": [...], "module_id": [...], "prompt_truncated": [...]}}.
                    For query i (`read_openrlhf_query` has the rule):
                      context     = prompts[i] (with a `<module>NAME</module>` tag in it taken out), always
                                    the whole prompt the request carries, also when query[i] holds only its tail;
                      module text = what follows the first occurrence of prompts[i] in query[i]
                                    (OpenRLHF's query is prompt + response); when query[i] does not hold the
                                    whole prompt (OpenRLHF cuts a long prompt from the left, in tokens, to fit
                                    max_length), what follows the first occurrence of the longest suffix of
                                    prompts[i] that query[i] holds, if it has at least MIN_PROMPT_TAIL (16)
                                    characters (`prompt_end`); else the query is refused (422);
                      module      = labels[i] when it is a module name (or an object with a "module" key),
                                    else a `<module>NAME</module>` tag in the prompt (never the response:
                                    the policy must not pick its own judge), else the server's --module.
                    rewards are the (normalised, with --normalize) rewards, scores their sigmoid, in (0, 1);
                    extra_logs.raw_reward the heads' rewards before normalisation, module_id the index
                    of the query's module in /health's "modules", prompt_truncated 1 for a query that
                    held only a tail of its prompt, else 0 (numbers, as OpenRLHF logs them); a request
                    with such queries also logs one warning with their count. `extra_logs` false
                    (`--no-extra-logs`) leaves extra_logs out, for OpenRLHF 0.8.x, whose client fails on them.

Uncertainty: for a checkpoint trained with `--ensemble K` (/health's "ensemble" > 1), /score's answer
also holds "uncertainty": [...] and /get_reward's extra_logs "uncertainty": [...], one per row: the
members' standard deviation in the units of "rewards" (pipeline/rewards.py). Single-model
checkpoints answer exactly as before.

Micro-batching: requests wait in a queue; a background task takes the first, keeps collecting
rows of requests that arrive within `max_wait_ms` up to `max_batch` rows, scores them in one
scorer call in a worker thread, and answers each request with its own rows. A request of more than
`max_batch` rows is scored in parts of at most LARGE_REQUEST_CHARS (32,000) characters of text (at least one
row, at most `max_batch`) per call, the requests queued meanwhile in between,
so small requests do not wait for a large one; a request whose client hangs up leaves the queue
unscored (`abandoned` in /health). `max_batch 1` scores every request alone. When scoring
a batch raises, each of its requests is scored again alone, so only the request at fault fails.

Limits: bodies over `max_body_bytes`, requests over `max_request_rows` rows and requests over
`max_request_chars` characters of text get 413. A POST not declared `application/json` gets 415
(a browser page can POST text/plain to 127.0.0.1 without a CORS preflight). Bodies that are not
JSON get 400; JSON of the wrong shape (missing fields, wrong types, unknown module,
unequal lists, text with a lone surrogate such as "\\ud800", a label that looks like a mistyped
module name when nothing else names the module) gets 422. Past `max_pending` requests waiting to be
scored, 503 with Retry-After. A request must arrive whole within `read_timeout_s` of its first byte
(`http_protocol`), else its connection is closed. /docs and /openapi.json only with `docs`. Every
refusal is `{"error": "what is wrong and where"}`; a fault of the server's is a 500 with the same body.
Every refusal (4xx and 503, the router's 404 and 405 too) is also logged as a warning with its reason
and the request's size, `422 POST /get_reward (12,345 bytes, 4 queries): labels[2]: ...`, since a
client may log only the status line (OpenRLHF does).
"""

import asyncio
import ctypes
import errno
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from data.errors import UserError
from heads.blend import blend_weights, describe_reward
from pipeline.config import ServeConfig
from pipeline.rewards import Rewards, RewardScorer, sigmoid

logger = logging.getLogger(__name__)

_DRAIN_BYTES = 256 * 1024 * 1024
# A request of more rows than max_batch is scored this many rows per scorer call, so that a small
# request arriving meanwhile waits for a few rows of long texts at most, not for max_batch of them.
# a part of a request larger than a batch: its rows' texts up to this many characters (at least one
# row). Encoding costs by the tokens kept (texts are cut to the encoder's budget), so long texts make
# parts of a row or two and short ones parts of many: measured with bench/serve.py --adversarial.
LARGE_REQUEST_CHARS = 32_000
MODULE_TAG = re.compile(r"<module>\s*([^<>]*?)\s*</module>")


class RequestError(UserError):
    """A request refused with a 4xx status and a message saying what is wrong."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


# --- micro-batching ------------------------------------------------------------------------------


@dataclass
class _Job:
    contexts: list[str]
    module_texts: list[str]
    modules: list[str]
    future: asyncio.Future = field(repr=False)
    scored: int = 0  # rows scored so far; a request larger than a batch is scored a batch at a time
    parts: list[Rewards] = field(default_factory=list, repr=False)


class MicroBatcher:
    """Collects the rows of requests that arrive together and scores them in one call of `score`
    (run in a worker thread, so the event loop keeps taking requests meanwhile). A request of more
    than `max_batch` rows is scored in parts of `large_chars` characters per call, and after each of its calls the
    requests that queued up meanwhile go first, so a small request never waits for a whole large
    one. A request whose awaiting task is cancelled (its client went away) is dropped from the
    queue, and what is left of it is never scored."""

    def __init__(self, score: Callable[[list, list, list], Rewards], max_batch: int, max_wait: float, max_pending: int = 256, large_chars: int | None = None):
        self.score_rows = score
        self.max_batch = max_batch
        # characters of text per call of a request larger than a batch (None: max_batch rows per call)
        self.large_chars = large_chars
        self.max_wait = max_wait
        self.max_pending = max_pending
        self.batches = 0
        self.dropped = 0  # requests dropped unscored or part-scored: nobody waited for them any more
        self._pending: deque[_Job] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def score(self, contexts: list[str], module_texts: list[str], modules: list[str]) -> Rewards:
        if not modules:
            return self.score_rows([], [], [])
        if len(self._pending) >= self.max_pending:
            # a bounded queue: past it, waiting would only grow memory and every client's latency
            raise RequestError(
                503, f"{len(self._pending)} requests are already waiting to be scored (serve.max_pending); retry shortly",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        job = _Job(contexts, module_texts, modules, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._arrived.set()
        return await job.future  # cancelling this cancels the future, and the batcher drops the job

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        trimmed = True
        while True:
            if not self._pending and not trimmed:
                await asyncio.to_thread(_release_memory)
                trimmed = True
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            trimmed = False
            batch: list[tuple[_Job, int]] = []  # (job, rows of it in this batch, from job.scored on)
            rows = 0
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch:
                if not self._pending:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or not batch:
                        break
                    self._arrived.clear()
                    with suppress(TimeoutError, asyncio.TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    continue
                job = self._pending[0]
                if job.future.done():  # the client went away: drop it, and whatever is left of it
                    self._pending.popleft()
                    self.dropped += 1
                    continue
                left = len(job.modules) - job.scored
                if left <= self.max_batch - rows:
                    batch.append((self._pending.popleft(), left))
                    rows += left
                elif not batch:  # larger than a batch: a part of it now, the rest after those queued meanwhile
                    batch.append((self._pending.popleft(), self._part_rows(job)))
                    break
                else:
                    break  # it opens the next batch
            await self._score(batch)
            for job, _ in batch:
                if job.future.cancelled():
                    self.dropped += 1
                elif not job.future.done():
                    self._pending.append(job)  # the rest of it, behind the requests that arrived while this batch was scored

    def _part_rows(self, job: "_Job") -> int:
        """How many of a large job's next rows one call scores: up to `large_chars` characters of
        their texts, at least one row, at most `max_batch`."""
        last = min(len(job.modules), job.scored + self.max_batch)
        if self.large_chars is None:
            return last - job.scored
        rows, chars = 0, 0
        for i in range(job.scored, last):
            chars += len(job.contexts[i]) + len(job.module_texts[i])
            if rows and chars > self.large_chars:
                break
            rows += 1
        return rows

    async def _score(self, batch: list[tuple[_Job, int]]) -> None:
        batch = [(job, n) for job, n in batch if not job.future.done()]  # done: the client went away
        if not batch:
            return
        self.batches += 1
        try:
            rewards = await asyncio.to_thread(
                self.score_rows,
                [c for job, n in batch for c in job.contexts[job.scored : job.scored + n]],
                [t for job, n in batch for t in job.module_texts[job.scored : job.scored + n]],
                [m for job, n in batch for m in job.modules[job.scored : job.scored + n]],
            )
        except Exception as e:  # the requests were checked, so this is ours
            if len(batch) > 1:
                # the rows of one request may be what broke the batch: its neighbours must not pay
                for part in batch:
                    await self._score([part])
                return
            job = batch[0][0]
            logger.exception("scoring a request of %d rows failed", len(job.modules))
            if not job.future.done():
                job.future.set_exception(e)
            return
        start = 0
        for job, n in batch:
            job.parts.append(rewards[start : start + n])
            job.scored += n
            start += n
            if job.scored == len(job.modules) and not job.future.done():
                job.future.set_result(job.parts[0] if len(job.parts) == 1 else Rewards.concatenate(job.parts))
            if job.future.done():
                job.parts = []


def _release_memory() -> None:
    """Hand the heap's free memory back to the system once the queue is empty (glibc keeps what a
    large request's tokenizing and encoding freed in its arenas otherwise). Linux/glibc only."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


# --- reading requests ----------------------------------------------------------------------------


def is_json(content_type: str) -> bool:
    """Whether a Content-Type header says JSON: "application/json", parameters (charset) allowed."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


async def read_json(request: Request, limit: int) -> object:
    """The request body parsed as JSON; 415 unless its Content-Type is application/json, 413 over
    `limit` bytes, 400 when it is not JSON. The bytes read are noted on `request.state.body_bytes`
    for the log of a refusal."""
    # Not only a formality: a web page in the operator's browser may POST text/plain (or a form)
    # to 127.0.0.1 without a CORS preflight, but never application/json.
    wrong_type = not is_json(request.headers.get("content-type", ""))
    if wrong_type:
        limit = 0  # read and drop the body (see below), then refuse
    body, size = bytearray(), 0
    stream = request.stream()
    while True:
        try:
            chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except ClientDisconnect:  # gone, or dropped by the read timeout: nobody to answer
            raise RequestError(400, "the client closed the connection before its body arrived") from None
        size += len(chunk)
        request.state.body_bytes = size
        if size <= limit:
            body += chunk
        elif size > limit + _DRAIN_BYTES:
            break
        # else: read and drop the rest, since a client still sending when the connection closes
        # sees a reset instead of the 413 and its message
    if wrong_type:
        given = request.headers.get("content-type")
        raise RequestError(415, f"Content-Type {given!r} is not application/json; send JSON with that Content-Type" if given else
                           "no Content-Type; send JSON with Content-Type: application/json")  # fmt: skip
    if size > limit:
        declared = request.headers.get("content-length", "")
        of = f" of {declared} bytes" if declared.isdigit() else ""
        raise RequestError(413, f"request body{of} is over the limit of {limit} bytes (serve.max_body_bytes)")
    if not body:
        raise RequestError(400, "empty request body; expected a JSON object")
    try:
        return json.loads(body)
    except UnicodeDecodeError as e:
        raise RequestError(400, f"request body is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise RequestError(400, f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise RequestError(400, "request body is JSON nested too deeply") from None


def _text(value: str) -> str:
    """Refuse a string that is no text: JSON's "\\ud800" parses to a lone surrogate, which cannot be
    encoded, so hashing or tokenising it would fail inside the batch shared with other requests."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"a lone surrogate ({value[e.start]!r}) at character {e.start} is not text; send valid Unicode") from None
    return value


Text = Annotated[str, AfterValidator(_text)]


class Body(BaseModel):
    """A request body as an endpoint takes it: its fields with their types as sent (strict: a
    number is no string); fields of other names are ignored."""

    model_config = ConfigDict(strict=True)
    shape: ClassVar[str]  # the shape, for the answer to a body that is not even an object


class ScoreItem(Body):
    """One row of /score."""

    context: Text
    module: Text
    module_text: Text


class ScoreRequest(Body):
    """/score's: rows to score, each its own context, module and module text."""

    shape = '{"items": [{"context": ..., "module": ..., "module_text": ...}, ...]}'
    items: list[ScoreItem]


class GetRewardRequest(Body):
    """OpenRLHF's: query i is prompts[i] (or the tail of it OpenRLHF kept) and then the response;
    labels[i], when given, may name the module (`read_openrlhf_query`)."""

    shape = '{"query": [...], "prompts": [...], "labels": [...]}'
    query: list[Text]
    prompts: list[Text]
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _equally_long(self) -> "GetRewardRequest":
        if len(self.prompts) != len(self.query) or (self.labels is not None and len(self.labels) != len(self.query)):
            sizes = f"{len(self.query)} queries, {len(self.prompts)} prompts" + (f", {len(self.labels)} labels" if self.labels is not None else "")
            raise ValueError(f"query, prompts and labels must be equally long, got {sizes}")
        return self


def read_body(model: type[Body], body: object, limit: int) -> Body:
    """`body` as a `model`, or `RequestError`: 413 when one of its lists holds more than `limit`
    entries (before anything else is read), else 422 saying which field is wrong and how."""
    if not isinstance(body, dict):
        raise RequestError(422, f"expected {model.shape}, got {_kind(body)}")
    for name in model.model_fields:
        value = body.get(name)
        if isinstance(value, list) and len(value) > limit:
            raise RequestError(413, f"{len(value)} entries in {name!r}, at most {limit} per request (serve.max_request_rows); split the request")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise RequestError(422, _reason(e.errors()[0])) from None


def _reason(error: dict) -> str:
    """pydantic's complaint about a body in the API's words: "items[0].context must be a string, got a number"."""
    kind, loc, value = error["type"], error["loc"], error["input"]
    where = _where(loc)
    if kind == "missing":
        return f"{_where(loc[:-1])}: missing field {loc[-1]!r}" if len(loc) > 1 else f"missing field {loc[-1]!r}"
    if kind == "model_type":  # the one object inside a body
        return f"{where} must be an object with {', '.join(ScoreItem.model_fields)}, got {_kind(value)}"
    if kind == "list_type":
        return f"{where!r} must be a list, got {_kind(value)}"
    if kind == "string_type":
        return f"{where} must be a string, got {_kind(value)}"
    if kind == "value_error":  # ours: a lone surrogate, unequal lists
        reason = str(error["ctx"]["error"])
        return f"{where}: {reason}" if where else reason
    return f"{where}: {error['msg']}"


def _where(loc: tuple) -> str:
    """A place in a body as the API names it: items[0].context."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def read_score_items(body: object, modules: Sequence[str], limit: int) -> tuple[list[str], list[str], list[str]]:
    """(contexts, module_texts, modules) of a /score request, or `RequestError` naming the bad field."""
    items = read_body(ScoreRequest, body, limit).items
    for i, item in enumerate(items):
        if item.module not in modules:
            raise RequestError(422, f"items[{i}].module: unknown module {item.module!r} (this checkpoint has: {', '.join(modules)})")
    return [item.context for item in items], [item.module_text for item in items], [item.module for item in items]


MIN_PROMPT_TAIL = 16  # characters: a shorter piece of a prompt found in a query could be chance


def prompt_end(query: str, prompt: str) -> tuple[int, bool] | None:
    """(where `prompt` ends in OpenRLHF's `query`, whether only a tail of it is there), or None when
    no part of it is. The first occurrence of the whole prompt; else of the longest suffix of the
    prompt, of at least MIN_PROMPT_TAIL characters, that the query holds. OpenRLHF cuts a long prompt
    from the left in tokens and decodes the rest, so the query starts inside the prompt, perhaps
    mid-word or with a replacement character for a cut multi-byte character."""
    where = query.find(prompt)
    if where >= 0:
        return where + len(prompt), False
    # if the query holds prompt[-n:] it holds every shorter suffix too, so bisect on n
    found, above = 0, len(prompt)  # prompt[-found:] is in the query (trivially, for 0); the whole prompt is not
    while above - found > 1:
        n = (found + above) // 2
        if prompt[-n:] in query:
            found = n
        else:
            above = n
    if found < MIN_PROMPT_TAIL:
        return None
    return query.find(prompt[-found:]) + found, True


def read_openrlhf_query(
    query: str, prompt: str, label: object, modules: Sequence[str], default_module: str, i: int, warn: Callable[[str, str], None] | None = None
) -> tuple[str, str, str, bool]:
    """(context, module_text, module, prompt_truncated) of OpenRLHF's query i, by the rule in this
    file's docstring; `warn(label, message)` hears of a label that looks like a mistyped module name."""
    end = prompt_end(query, prompt)
    if end is None:
        raise RequestError(
            422,
            f"query[{i}] does not contain prompts[{i}], nor a tail of it of at least {MIN_PROMPT_TAIL} characters; "
            "the module text is what follows the prompt (or the tail OpenRLHF kept of it) in the query",
        )
    module_text, truncated = query[end[0] :], end[1]
    # the context is the whole prompt the request carries, also when the query holds only its tail
    tag = MODULE_TAG.search(prompt)
    context = prompt[: tag.start()] + prompt[tag.end() :] if tag else prompt
    mistyped = isinstance(label, str) and label not in modules and looks_like_module_label(label)
    if isinstance(label, dict) and "module" in label:
        module, source = label["module"], f"labels[{i}].module"
    elif isinstance(label, str) and label in modules:
        module, source = label, f"labels[{i}]"
    elif mistyped and not tag and not default_module:
        raise RequestError(
            422,
            f"labels[{i}]: unknown module {label!r} (this checkpoint has: {', '.join(modules)}); a label that is not a module "
            "name is ignored only when it does not look like one (see looks_like_module_label)",
        )
    elif tag:
        module, source = tag.group(1), f"the <module> tag in prompts[{i}]"
    elif default_module:
        module, source = default_module, "the server's --module"
    else:
        raise RequestError(
            422,
            f"no module for query[{i}]: give labels[{i}] as a module name ({', '.join(modules)}), put <module>NAME</module> "
            "in the prompt, or start the server with --module",
        )
    if module not in modules:
        raise RequestError(422, f"{source}: unknown module {module!r} (this checkpoint has: {', '.join(modules)})")
    if mistyped and warn is not None:
        warn(label, f"labels[{i}] {label!r} looks like a module name but is none of {', '.join(modules)}; scored with {source}, {module!r}")
    return context, module_text, module, truncated


_MODULE_LABEL = re.compile(r"[a-z][a-z0-9_]{1,31}")


def looks_like_module_label(label: str) -> bool:
    """A label shaped like the module names: one short lower-case identifier ("critic", "planer").
    Reference answers OpenRLHF also sends as labels are sentences, numbers or capitalised words, so
    such a label is more likely a mistyped module than an answer: refused when nothing else names
    the module, and logged when the tag or --module is used instead."""
    return _MODULE_LABEL.fullmatch(label) is not None


def read_get_reward(
    body: object, modules: Sequence[str], default_module: str, limit: int, warn: Callable[[str, str], None] | None = None
) -> tuple[list[str], list[str], list[str], list[bool]]:
    """(contexts, module_texts, modules, prompt_truncated) of an OpenRLHF /get_reward request."""
    request = read_body(GetRewardRequest, body, limit)
    labels = request.labels if request.labels is not None else [None] * len(request.query)
    rows = [
        read_openrlhf_query(query, prompt, label, modules, default_module, i, warn)
        for i, (query, prompt, label) in enumerate(zip(request.query, request.prompts, labels))
    ]
    contexts, module_texts, row_modules, truncated = (list(column) for column in zip(*rows)) if rows else ([], [], [], [])
    return contexts, module_texts, row_modules, truncated


async def client_gone(request: Request) -> None:
    """Returns once the client has closed its connection. The body has been read, so the next
    message uvicorn has for this request is the disconnect (or it comes when the answer is sent)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _note_rows(request: Request, body: object, name: str, noun: str, nouns: str) -> None:
    """Note how many rows a request holds (when its `name` field is a list), for the log of a refusal."""
    if isinstance(body, dict) and isinstance(body.get(name), list):
        n = len(body[name])
        request.state.rows = f"{n:,} {noun if n == 1 else nouns}"


def _request_size(request: Request) -> str:
    """The body's size as declared (else as read) and its rows when known: "12,345 bytes, 4 queries"."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else getattr(request.state, "body_bytes", 0)
    rows = getattr(request.state, "rows", None)
    return f"{size:,} bytes" + (f", {rows}" if rows else "")


def _shorten(message: str, limit: int = 1000) -> str:
    return message if len(message) <= limit else f"{message[:limit]}... ({len(message):,} characters)"


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# --- the app -------------------------------------------------------------------------------------


def create_app(scorer: RewardScorer, settings: ServeConfig) -> FastAPI:
    """The FastAPI app serving `scorer` under the config's `serve` section (limits, default module,
    extra_logs, docs); its micro-batcher starts and stops with the app."""
    if settings.module and settings.module not in scorer.modules:
        raise ValueError(f"--module {settings.module!r} is not a module of this checkpoint (it has: {', '.join(scorer.modules)})")
    # one pass of the heads per batch gives each request its slice of rewards, uncertainty and round shares
    batcher = MicroBatcher(scorer.rewards, settings.max_batch, settings.max_wait_ms / 1000, settings.max_pending, LARGE_REQUEST_CHARS)
    counters = {"requests": 0, "rows": 0, "refused": 0, "abandoned": 0}
    warned: set[str] = set()

    def warn_once(label: str, message: str) -> None:
        # once per label, so a client that sends one-word answers as labels does not flood the log
        if label not in warned and len(warned) < 1000:
            warned.add(label)
            logger.warning(message)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    docs = {} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="module reward models", lifespan=lifespan, **docs)
    app.state.scorer, app.state.batcher, app.state.settings = scorer, batcher, settings
    _add_error_handlers(app, counters)
    rewards_for = _rewards_for(scorer, settings, batcher, counters)
    _add_routes(app, scorer, settings, batcher, counters, started, warn_once, rewards_for)
    return app


def _add_error_handlers(app: FastAPI, counters: dict) -> None:
    """Every refusal answered as JSON {"error": ...} and logged with its reason; a bug of ours as 500."""

    def log_refusal(request: Request, status: int, message: str) -> None:
        # the client may log only the status line (OpenRLHF does), so the reason must be here
        counters["refused"] += 1
        logger.warning("%d %s %s (%s): %s", status, request.method, request.url.path, _request_size(request), _shorten(message))

    @app.exception_handler(RequestError)
    async def refuse(request: Request, error: RequestError) -> JSONResponse:
        log_refusal(request, error.status, error.message)
        return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def refuse_route(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # the router's own refusals (404 no such path, 405 wrong method) come before any endpoint
        log_refusal(request, error.status_code, str(error.detail))
        return await http_exception_handler(request, error)

    @app.exception_handler(Exception)
    async def fail(request: Request, error: Exception) -> JSONResponse:
        # a bug of ours, not the client's: JSON like every other answer; the log has the traceback
        return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"}, status_code=500)


def _rewards_for(scorer: RewardScorer, settings: ServeConfig, batcher: MicroBatcher, counters: dict):
    """The endpoints' one way to score rows: through the micro-batcher, refusals first."""

    async def rewards_for(request: Request, contexts: list[str], module_texts: list[str], modules: list[str], where: str) -> tuple[Rewards, dict]:
        """(the rows' `Rewards`, {"uncertainty": [...]} for an ensemble checkpoint, else {}); a row of
        a module the scorer does not answer for (untrained head, no normalisation) is refused with
        422 before anything is queued, naming `where.format(row)`, and a request over
        `max_request_chars` characters of text with 413. When the client goes away meanwhile, the
        request leaves the queue and is answered 499 (to nobody; for the log)."""
        scorable = set(scorer.scorable_modules)
        refused = next((i for i, m in enumerate(modules) if m not in scorable), None)
        if refused is not None:
            raise RequestError(422, f"{where.format(refused)}: {scorer.refusal(modules[refused])}")
        chars = sum(map(len, contexts)) + sum(map(len, module_texts))
        if chars > settings.max_request_chars:
            raise RequestError(
                413, f"the request holds {chars:,} characters of text (contexts and module texts), over the limit of "
                f"{settings.max_request_chars:,} per request (serve.max_request_chars); split the request",
            )  # fmt: skip
        counters["requests"] += 1
        counters["rows"] += len(modules)
        scoring = asyncio.ensure_future(batcher.score(contexts, module_texts, modules))
        gone = asyncio.ensure_future(client_gone(request))
        try:
            await asyncio.wait({scoring, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not scoring.done():
                scoring.cancel()  # the batcher drops the request, and what is left of it
        if not scoring.done() or scoring.cancelled():
            counters["abandoned"] += 1
            raise RequestError(499, f"the client closed the connection before its answer; {len(modules)} rows dropped unscored (or part-scored)")
        scored = scoring.result()
        return scored, ({"uncertainty": scored.uncertainty.tolist()} if scorer.members > 1 else {})

    return rewards_for


def _add_routes(app: FastAPI, scorer: RewardScorer, settings: ServeConfig, batcher: MicroBatcher, counters: dict, started: float, warn_once, rewards_for) -> None:
    """GET /health, POST /score (ours) and POST /get_reward (OpenRLHF's remote reward model)."""

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "checkpoint": str(scorer.folder),
            "modules": scorer.modules,
            "trained_modules": scorer.trained_modules,  # the others are refused (422) unless allow_untrained
            "module_pairs": scorer.module_pairs,  # {module: {"train": n, "val": n}}; null for checkpoints from before the record
            "scorable_modules": scorer.scorable_modules,
            "allow_untrained": scorer.allow_untrained,
            "normalized": scorer.normalize,
            "ensemble": scorer.members,
            "encoder": scorer.fingerprint.get("encoder"),
            "reward": describe_reward(scorer.record),  # what the rewards are made of, in words
            "blend": blend_weights(scorer.record),  # {"heads": w, "linear": w, "tfidf": w}; null: the heads alone
            "max_batch": settings.max_batch,
            "max_wait_ms": settings.max_wait_ms,
            "max_request_rows": settings.max_request_rows,
            "max_body_bytes": settings.max_body_bytes,
            "max_request_chars": settings.max_request_chars,
            "default_module": settings.module or None,
            "max_pending": settings.max_pending,
            "read_timeout_s": settings.read_timeout_s,
            "extra_logs": settings.extra_logs,
            **counters,
            "scorer_calls": batcher.batches,
            "uptime_s": round(time.time() - started, 1),
        }

    @app.post("/score")
    async def score(request: Request) -> dict:
        body = await read_json(request, settings.max_body_bytes)
        _note_rows(request, body, "items", "item", "items")
        contexts, module_texts, modules = read_score_items(body, scorer.modules, settings.max_request_rows)
        scored, extra = await rewards_for(request, contexts, module_texts, modules, "items[{}].module")
        answer = {"rewards": scored.rewards.tolist(), **extra, "normalized": scorer.normalize}
        if scored.round_rewards is not None:
            answer["round_rewards"] = [shares.tolist() for shares in scored.round_rewards]
        return answer

    @app.post("/get_reward")
    async def get_reward(request: Request) -> dict:
        body = await read_json(request, settings.max_body_bytes)
        _note_rows(request, body, "query", "query", "queries")
        contexts, module_texts, modules, truncated = read_get_reward(body, scorer.modules, settings.module, settings.max_request_rows, warn_once)
        scored, extra = await rewards_for(request, contexts, module_texts, modules, "query[{}]")
        if any(truncated):
            # one line per request: OpenRLHF sends a query per request, and long prompts are its common case
            logger.warning(
                "/get_reward: %d of %d queries held only a tail of their prompt (cut from the left, as OpenRLHF cuts long prompts); "
                "scored with the whole prompts[i] as context", sum(truncated), len(truncated),
            )  # fmt: skip
        answer = {"rewards": scored.rewards.tolist(), "scores": sigmoid(scored.rewards).tolist()}
        if settings.extra_logs:
            index = {m: i for i, m in enumerate(scorer.modules)}
            answer["extra_logs"] = {
                "raw_reward": scored.raw.tolist(), "module_id": [index[m] for m in modules],
                "prompt_truncated": [int(t) for t in truncated], **extra,
            }  # fmt: skip
        return answer


# --- running it ----------------------------------------------------------------------------------


def http_protocol(read_timeout: float) -> type:
    """uvicorn's h11 protocol with a read deadline: a request's headers and body must arrive within
    `read_timeout` seconds of its first byte (or of the connection opening), else the connection is
    closed. uvicorn itself only times out connections idle *between* requests, so a client that
    sends half a request and waits would hold its connection and buffers forever; the server is
    asyncio, so there is no blocking socket whose timeout could do this."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                if self._deadline is None:  # the first byte of the next request on this connection
                    self._arm()
            else:  # the whole request is in (or the connection is done with)
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(read_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                if self.conn.their_state is h11.SEND_BODY or self.conn.trailing_data[0]:
                    logger.warning("closed a connection from %s: its request did not arrive within %g s (serve.read_timeout_s)", self.client, read_timeout)
                self.transport.close()

    return TimedH11Protocol


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) for `serve`, or `UserError` in one line when it cannot be
    (the port is taken, the address is not this machine's), before anything says it is serving."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does; a port in use is still refused
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        hint = "; is another server on that port? pick another with --port" if e.errno == errno.EADDRINUSE else ""
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
    return sock


def serve(scorer: RewardScorer, settings: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", sock: socket.socket | None = None) -> None:
    """Run the server in the foreground until interrupted (Ctrl-C or SIGTERM), on `sock` when given
    (see `listen`), else on a socket bound to (host, port) here."""
    import uvicorn

    app = create_app(scorer, settings)
    sock = sock or listen(host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, http=http_protocol(settings.read_timeout_s))
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer:
    """The server in a thread of this process, on a port of its own (0: any free one); for tests
    and notebooks.

        with BackgroundServer(create_app(scorer, settings)) as server:
            urllib.request.urlopen(f"{server.url}/health")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        self.socket = socket.create_server((host, port))
        self.host, self.port = host, self.socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        protocol = http_protocol(app.state.settings.read_timeout_s)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, http=protocol))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()
