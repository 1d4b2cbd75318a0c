"""The `openai` backend: a model behind an OpenAI-protocol endpoint (vLLM, or an API).

Each request is one `POST {base_url}/chat/completions` with the role's model, temperature,
top_p and max_completion_tokens, the answer constrained by the request's JSON schema (a strict
`json_schema` response format; the raw text is validated here, so it survives a bad answer) and
images inline as PNG data URLs. Requests go out through aiohttp on the agents' one event loop
(atelier.agents.http_loop): no typed client in between, because its per-call CPU, not any pool or
bound, is what held requests in flight below the bound (BENCHMARKS.md). Around each call:
  - a semaphore per endpoint bounds the requests in flight (shared by every role on that URL);
  - transport failures are retried (tenacity) with exponential back-off and jitter, or after the
    server's `Retry-After` / `retry-after-ms` when it asks for longer (capped at
    MAX_RETRY_AFTER_S), then recorded as a failed result, never raised: connection refused or
    reset, timeouts, a body cut short, 408/409/429 and 5xx, and a 200 whose body is not a chat
    completion (an HTML page, text, JSON cut short, JSON without choices). `max_retries` means
    what it says: nothing below retries on its own;
  - 401, 403, 404 and redirects stop the run as a config error (wrong URL, model name or key;
    the key never follows a redirect);
  - an answer that is empty, not JSON, off the schema or against the request's rules is sent
    back with the validation error, up to `max_reasks` times, then returned as a failed result
    holding the raw text. The API key comes from the environment variable the config names;
    every configured key is masked in what this module returns (raw text, errors, the parsed
    answer's strings), and each is bounded (atelier.agents.records). An otherwise valid answer
    that cleaning leaves invalid, or that is too large, is sent back like an invalid one.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
import os
import random
import time
from collections.abc import Mapping

import aiohttp
import tenacity
from pydantic import BaseModel, ValidationError

from atelier.agents import http_loop, records
from atelier.agents.backend import AgentRequest, AgentResult, Backend
from atelier.agents.endpoints import endpoint_slots
from atelier.agents.images import png_data_url
from atelier.agents.templates import reask_text, render
from atelier.config import AgentConfig, ConfigError

log = logging.getLogger("atelier.agents")

# The bearer token sent to servers that want none (vLLM without --api-key), as OpenAI's clients do.
NO_KEY = "EMPTY"


class AgentEndpointError(ConfigError):
    """The endpoint refuses the role's requests (wrong URL, model name or key): a config problem."""


class _BadAnswer(Exception):
    """An answer that must be sent back; carries the model's text."""

    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.raw = raw


class TransportError(Exception):
    """No usable reply to one HTTP request: unreachable, timed out, cut short, or not a completion.
    Retried; `headers` are the reply's (empty when there was none)."""

    headers: Mapping[str, str] = {}


class StatusError(TransportError):
    """An HTTP status other than 200, with the reply's headers and (one line of) its body."""

    def __init__(self, status: int, reason: str, body: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"HTTP {status} {reason}".rstrip() + (f": {body}" if body else ""))
        self.status_code = status
        self.headers = headers or {}


class _BadReply(TransportError):
    """A 200 whose body is not a chat completion: retried like a 502."""


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _completion_message(content_type: str, body: bytes) -> tuple[str, str | None]:
    """(the assistant's text, finish_reason) of a 200 reply; _BadReply when the body is no chat
    completion (an HTML page, text labelled JSON, JSON cut short, JSON without choices)."""
    kind = content_type.split(";")[0] or "no content type"
    try:
        data = json.loads(body)
    except ValueError:
        raise _BadReply(f"the endpoint answered 200 with a body that is not JSON ({kind}, {len(body)} bytes): "
                        f"{_one_line(body.decode('utf-8', 'replace'))!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict) and isinstance(choices[0].get("message"), dict)):
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            error = error.get("message", error)
        said = f"an error: {_one_line(str(error))!r}" if error else \
            f"JSON that is not a chat completion: {_one_line(body.decode('utf-8', 'replace'))!r}"
        raise _BadReply(f"the endpoint answered 200 with {said}")
    choice = choices[0]
    content = choice["message"].get("content")
    if isinstance(content, list):  # content parts, as some servers send
        content = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return (content if isinstance(content, str) else ""), choice.get("finish_reason")


def _retryable(error: BaseException) -> bool:
    if isinstance(error, StatusError):
        return error.status_code >= 500 or error.status_code in (408, 409, 429)
    return isinstance(error, TransportError)


def _refuses_us(error: BaseException) -> bool:
    return isinstance(error, StatusError) and (error.status_code in (401, 403, 404) or 300 <= error.status_code < 400)


MAX_RETRY_AFTER_S = 120.0  # a server asking for longer gets a failed result after this wait, not an hour's stall
# A reply body larger than this is not read: a chat completion is kilobytes, and an answer of
# megabytes is cut on record anyway (atelier.agents.records); a server streaming gigabytes must
# not fill the memory of the process that trains.
MAX_REPLY_BYTES = 32 * 1024 * 1024


def retry_after_s(error: BaseException | None) -> float:
    """The wait an HTTP error's reply asks for: `retry-after-ms`, else `Retry-After` in seconds
    or as an HTTP date (RFC 9110 10.2.3); 0 when it asks for none. At most MAX_RETRY_AFTER_S."""
    headers = getattr(error, "headers", None)
    if not headers:
        return 0.0
    wait = 0.0
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            wait = float(ms) / 1000
        elif (value := headers.get("retry-after")) is not None:
            try:
                wait = float(value)
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                wait = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def _strict(schema, names: bool = False):
    """OpenAI's strict structured-output form of a JSON schema (as the SDK's `to_strict_json_schema`
    does): every object closed (`additionalProperties: false`) with every property required, and
    no `default` keywords, which strict mode makes moot and some servers reject. (`names`: the
    keys are field names, kept as they are.)"""
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    if names:
        return {k: _strict(v) for k, v in schema.items()}
    strict = {k: _strict(v, names=k in ("properties", "$defs")) for k, v in schema.items() if k != "default"}
    if strict.get("type") == "object" and "properties" in strict:
        strict["additionalProperties"] = False
        strict["required"] = list(strict["properties"])
    return strict


@functools.cache
def response_format(schema: type[BaseModel]) -> dict:
    """The `response_format` of a request whose answer is `schema`: a strict, named JSON schema
    (not the class: the answer's raw text is validated here, so that a bad answer can be sent back
    with its error instead of failing inside a client). Cached; never modify the result."""
    json_schema = _strict(schema.model_json_schema())
    description = json_schema.pop("description", None)
    json_schema.pop("title", None)
    named = {"name": schema.__name__, "schema": json_schema, "strict": True}
    if description:
        named["description"] = description
    return {"type": "json_schema", "json_schema": named}


def _unfenced(text: str) -> str:
    """The JSON inside a ```json fence, which some chat models add despite the schema."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped


def _describe(error: ValidationError, limit: int = 6) -> str:
    parts = []
    for e in error.errors()[:limit]:
        where = ".".join(str(p) for p in e["loc"])
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    more = f" (and {error.error_count() - limit} more)" if error.error_count() > limit else ""
    return "; ".join(parts) + more


def _fixed_temperature(model: str) -> bool:
    """OpenAI's gpt-5 reasoning models refuse any temperature but their default: it is not sent
    (the rule langchain-openai applies; gpt-5-chat models take one)."""
    name = model.lower().rsplit("/", 1)[-1]
    return name.startswith("gpt-5") and "chat" not in name


async def _bounded_body(reply: aiohttp.ClientResponse) -> bytes:
    """The reply's body, or a TransportError once it passes MAX_REPLY_BYTES: by its declared
    Content-Length, and as it arrives, counted after decompression (a small gzip body may inflate
    to gigabytes)."""
    limit = MAX_REPLY_BYTES
    too_large = f"the endpoint's reply is over {limit:,} bytes; not read"
    if reply.content_length is not None and reply.content_length > limit:
        raise TransportError(f"{too_large} (Content-Length {reply.content_length:,})")
    body = bytearray()
    async for chunk in reply.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            raise TransportError(too_large)
    return bytes(body)


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, config: AgentConfig, role: str):
        if config.backend != "openai" or not config.base_url or not config.model:
            raise ConfigError(f"agents.{role}: the openai backend needs backend 'openai', base_url and model")
        self.config = config
        self.role = role
        self._key = NO_KEY
        records.register_key_env(config.api_key_env)
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(f"agents.{role}.api_key_env: environment variable {config.api_key_env} is not set")
            self._key = key
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._proxy = http_loop.proxy_for(self._url)
        self._headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json",
                         "Accept": "application/json"}
        for header, variable in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID")):
            if os.environ.get(variable):  # as OpenAI's own clients send them
                self._headers[header] = os.environ[variable]
        self._sampling = {"max_completion_tokens": config.max_tokens, "temperature": config.temperature}
        if _fixed_temperature(config.model):
            del self._sampling["temperature"]
        if config.top_p is not None:
            self._sampling["top_p"] = config.top_p

    # --- requests, from synchronous code ------------------------------------------------------

    def ask(self, request: AgentRequest) -> AgentResult:
        return http_loop.run(self._ask(request))

    def ask_many(self, requests: list[AgentRequest]) -> list[AgentResult]:
        return http_loop.run(self._ask_many(requests))

    async def _ask_many(self, requests: list[AgentRequest]) -> list[AgentResult]:
        # At most `max_concurrency` requests being prepared or asked at once, so that a batch of
        # thousands holds that many encoded images, not all; the endpoint semaphore bounds what
        # is in flight across roles.
        active = asyncio.Semaphore(self.config.max_concurrency)

        async def one(request: AgentRequest) -> AgentResult:
            async with active:
                return await self._ask(request)

        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:  # an endpoint that refuses us, or Ctrl-C: the rest of the batch must not go on
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    # --- one request --------------------------------------------------------------------------

    async def _ask(self, request: AgentRequest) -> AgentResult:
        started = time.perf_counter()
        result = AgentResult(role=request.role, mode=request.mode, ok=False, answer=None, attempts=0)
        try:
            messages = await self._messages(request)
            for _ in range(self.config.max_reasks + 1):
                result.attempts += 1
                try:
                    result.answer = await self._answer(request, messages, result)
                    result.ok = True
                    break
                except _BadAnswer as bad:
                    keys = self._keys()
                    error = records.clean_text(str(bad), records.ERROR_LIMIT, keys)
                    result.raw, result.error = records.clean_text(bad.raw, records.RAW_LIMIT, keys), error
                    result.errors.append(error)
                    messages = [*messages, {"role": "assistant", "content": bad.raw},
                                {"role": "user", "content": reask_text(error)}]
            else:
                log.warning("%s/%s: no valid answer after %d tries: %s", request.role, request.mode, result.attempts, result.error)
        except _TransportFailure as failure:
            result.error = self._redact(str(failure))
            log.warning("%s/%s: %s", request.role, request.mode, result.error)
        if result.ok:
            result.error = None
        result.latency_s = time.perf_counter() - started
        return result.clean(*self._own_key())

    async def _messages(self, request: AgentRequest) -> list[dict]:
        system, user = render(request.template, request.template_values())
        content: list[dict] = [{"type": "text", "text": user}]
        for path in request.images():
            # PNG encoding releases the GIL: off the loop, it runs beside the other requests' work.
            url = await asyncio.to_thread(png_data_url, path)
            content.append({"type": "image_url", "image_url": {"url": url}})
        return [{"role": "system", "content": system}, {"role": "user", "content": content}]

    async def _answer(self, request: AgentRequest, messages: list[dict], result: AgentResult) -> BaseModel:
        schema = request.answer_schema
        body = {"model": self.config.model, "stream": False, "messages": messages, **self._sampling,
                "response_format": response_format(schema)}
        text, finish = await self._call(body, result)
        if finish in ("length", "content_filter"):
            raise _BadAnswer(f"the answer was cut off (finish_reason {finish!r}); answer more briefly", text)
        if not text.strip():
            raise _BadAnswer("the answer was empty; reply with one JSON object", text)
        # The raw text is validated, never a completed guess at it: a half answer is sent back.
        try:
            answer = schema.model_validate_json(_unfenced(text))
        except ValidationError as e:
            raise _BadAnswer(_describe(e), text) from None
        try:
            request.check(answer)
        except ValueError as e:
            raise _BadAnswer(str(e), text) from None
        cleaned = answer
        try:  # what is kept is the cleaned answer, so it must pass the same bar
            cleaned = records.clean_answer(answer, self._keys())
            if cleaned is not answer:
                request.check(cleaned)
        except ValueError as e:
            raise _BadAnswer(str(e), text) from None
        result.raw = text
        return cleaned

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Exponential back-off with 25% jitter, or the server's Retry-After when it is longer."""
        backoff = self.config.retry_backoff_s * 2 ** (state.attempt_number - 1) * (1 + 0.25 * random.random())
        return max(backoff, retry_after_s(state.outcome.exception() if state.outcome else None))

    async def _call(self, body: dict, result: AgentResult) -> tuple[str, str | None]:
        cfg = self.config
        data = json.dumps(body).encode()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(cfg.max_retries + 1), wait=self._wait, reraise=True,
            retry=tenacity.retry_if_exception(_retryable),
            before_sleep=lambda state: setattr(result, "retries", result.retries + 1))
        try:
            async for attempt in retrying:
                with attempt:
                    async with endpoint_slots(cfg.base_url, cfg.max_concurrency):  # released before the wait
                        return await self._post(data)
        except TransportError as e:
            if _refuses_us(e):
                moved = e.headers.get("Location") if 300 <= e.status_code < 400 else None
                raise AgentEndpointError(
                    f"agents.{self.role}: {cfg.base_url} answered {e.status_code} for model {cfg.model!r}"
                    + (f" (a redirect to {_one_line(moved, 200)}, not followed)" if moved else "")
                    + "; check base_url, model and api_key_env"
                ) from None
            if not _retryable(e):
                raise _TransportFailure(f"request rejected: {self._redact(str(e))}") from None
            tries = result.retries + 1
            raise _TransportFailure(f"gave up after {tries} {'try' if tries == 1 else 'tries'}: {self._redact(str(e))}") from None
        raise AssertionError("unreachable")

    async def _post(self, data: bytes) -> tuple[str, str | None]:
        """One HTTP round trip: the reply's text and finish_reason, or a TransportError."""
        timeout = self.config.timeout_s
        try:
            # No redirects: the key must not follow one, and a base_url that redirects is a config error.
            async with http_loop.session().post(self._url, data=data, headers=self._headers, proxy=self._proxy,
                                                allow_redirects=False,
                                                timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
                body = await _bounded_body(reply)  # a body cut short by a closed connection raises here
                status, reason, headers = reply.status, reply.reason or "", reply.headers
                content_type = reply.headers.get("Content-Type", "")
        except TransportError:
            raise
        except TimeoutError:
            raise TransportError(f"no reply within timeout_s={timeout:g}") from None
        except aiohttp.ClientResponseError as e:  # statuses are read below, so this is a reply aiohttp could not parse
            raise TransportError(f"the endpoint's reply is not valid HTTP: {_one_line(str(e.message), 300)}") from None
        except (aiohttp.ClientError, OSError, RuntimeError, ValueError) as e:
            # ClientError covers most; a reset socket (OSError), aiohttp's "Connection closed."
            # (RuntimeError) and an unparsable header value (ValueError) are transport failures too.
            raise TransportError(f"{type(e).__name__}: {_one_line(str(e) or type(e).__name__, 300)}") from None
        if status != 200:
            raise StatusError(status, reason, _one_line(body.decode("utf-8", "replace"), 300), headers)
        return _completion_message(content_type, body)

    def _own_key(self) -> tuple[str, ...]:
        return (self._key,) if self._key != NO_KEY else ()

    def _keys(self) -> list[str]:
        """Every configured key as the environment holds it now, and the one this backend sends."""
        return records.current_keys(*self._own_key())

    def _redact(self, text: str) -> str:
        return records.mask(text, self._keys())


class _TransportFailure(Exception):
    """No answer could be had from the endpoint."""
