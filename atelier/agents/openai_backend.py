"""The `openai` backend: a model behind an OpenAI-protocol endpoint (vLLM, or an API).

langchain-openai's ChatOpenAI with the role's base_url, model, temperature and timeout; answers
constrained by the request's JSON schema (a strict `json_schema` response format bound to the
chat model; the raw text is validated here, so it survives a bad answer); images inline as PNG
data URLs. Around each call:
  - a semaphore per endpoint bounds the requests in flight (shared by every role on that URL);
  - transport failures are retried (tenacity) with exponential back-off and jitter, or after the
    server's `Retry-After` / `retry-after-ms` when it asks for longer (capped at
    MAX_RETRY_AFTER_S), then recorded as a failed result, never raised: connection refused or
    reset, timeouts, 408/409/429 and 5xx, and a 200 whose body is not a chat completion (an HTML
    page, text, JSON cut short, JSON without choices), which an httpx response hook catches
    before any library parses it. The SDK's own retries are off (they cannot see those 200s), so
    `max_retries` means what it says;
  - an answer that is empty, not JSON, off the schema or against the request's rules is sent
    back with the validation error, up to `max_reasks` times, then returned as a failed result
    holding the raw text. The API key comes from the environment variable the config names;
    every configured key is masked in what this module returns (raw text, errors, the parsed
    answer's strings), and each is bounded (atelier.agents.records). An otherwise valid answer
    that cleaning leaves invalid, or that is too large, is sent back like an invalid one.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import tenacity
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.utils.function_calling import convert_to_openai_function
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, ValidationError

from atelier.agents import records
from atelier.agents.backend import AgentRequest, AgentResult, Backend
from atelier.agents.endpoints import endpoint_slots
from atelier.agents.images import png_data_url
from atelier.agents.templates import reask_text, render
from atelier.config import AgentConfig, ConfigError

log = logging.getLogger("atelier.agents")

# A key for servers that want none (vLLM without --api-key); ChatOpenAI insists on some value,
# and passing one stops it from picking up OPENAI_API_KEY behind the config's back.
NO_KEY = "EMPTY"


class AgentEndpointError(ConfigError):
    """The endpoint refuses the role's requests (wrong URL, model name or key): a config problem."""


class _BadAnswer(Exception):
    """An answer that must be sent back; carries the model's text."""

    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.raw = raw


class _BadReply(Exception):
    """A 200 whose body is not a chat completion: a transport failure, retried like a 502."""


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_reply(response) -> None:
    """httpx response hook: a chat completion's 200 must carry a chat completion. Without this
    the SDK hands an HTML page on as a str, raises JSONDecodeError for text labelled JSON, and
    langchain fails on JSON without choices, none of which the retry loop would see."""
    request = response.request
    if response.status_code != 200 or request.method != "POST" or not request.url.path.endswith("/chat/completions"):
        return
    response.read()  # a body cut short by a closed connection raises httpx's RemoteProtocolError here
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    try:
        data = json.loads(response.content)
    except ValueError:
        raise _BadReply(f"the endpoint answered 200 with a body that is not JSON ({kind}, {len(response.content)} bytes): "
                        f"{_one_line(response.content.decode('utf-8', 'replace'))!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict) and isinstance(choices[0].get("message"), dict)):
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            error = error.get("message", error)
        said = f"an error: {_one_line(str(error))!r}" if error else f"JSON that is not a chat completion: {_one_line(response.text)!r}"
        raise _BadReply(f"the endpoint answered 200 with {said}")


_clients_lock = threading.Lock()
_clients: dict[str, openai.DefaultHttpxClient] = {}


def _http_client(base_url: str) -> openai.DefaultHttpxClient:
    """One connection pool per endpoint, shared by its roles and backends (as langchain's own
    default client is), with the reply check as a response hook. The SDK's default limits (1000
    connections, 100 kept alive) stay well above any sane `max_concurrency`."""
    key = base_url.rstrip("/")
    with _clients_lock:
        if key not in _clients:
            _clients[key] = openai.DefaultHttpxClient(event_hooks={"response": [_check_reply]})
        return _clients[key]


def _retryable(error: Exception) -> bool:
    if isinstance(error, (openai.APIConnectionError, openai.APIResponseValidationError, _BadReply)):  # incl. timeouts
        return True
    return isinstance(error, openai.APIStatusError) and (error.status_code >= 500 or error.status_code in (408, 409, 429))


MAX_RETRY_AFTER_S = 120.0  # a server asking for longer gets a failed result after this wait, not an hour's stall


def retry_after_s(error: BaseException | None) -> float:
    """The wait an HTTP error's response asks for: `retry-after-ms`, else `Retry-After` in
    seconds or as an HTTP date (RFC 9110 10.2.3); 0 when it asks for none. At most MAX_RETRY_AFTER_S."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
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


def _refuses_us(error: Exception) -> bool:
    return isinstance(error, openai.APIStatusError) and error.status_code in (401, 403, 404)


def _text_of(message: AIMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in message.content)


def _without_defaults(schema, names: bool = False):
    """The JSON schema minus `default` keywords: in strict mode every field is required anyway,
    and some servers reject the keyword. (`names`: the keys are field names, kept as they are.)"""
    if isinstance(schema, dict):
        return {k: _without_defaults(v, names=k in ("properties", "$defs") and not names)
                for k, v in schema.items() if names or k != "default"}
    if isinstance(schema, list):
        return [_without_defaults(v) for v in schema]
    return schema


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
        self._chat = ChatOpenAI(
            model=config.model, base_url=config.base_url, api_key=self._key, temperature=config.temperature,
            timeout=config.timeout_s, max_retries=0, max_tokens=config.max_tokens, top_p=config.top_p,
            http_client=_http_client(config.base_url),
        )
        self._slots = endpoint_slots(config.base_url, config.max_concurrency)
        self._structured: dict[type[BaseModel], object] = {}

    # --- one request --------------------------------------------------------------------------

    def ask(self, request: AgentRequest) -> AgentResult:
        started = time.perf_counter()
        result = AgentResult(role=request.role, mode=request.mode, ok=False, answer=None, attempts=0)
        try:
            messages = self._messages(request)
            for _ in range(self.config.max_reasks + 1):
                result.attempts += 1
                try:
                    result.answer = self._answer(request, messages, result)
                    result.ok = True
                    break
                except _BadAnswer as bad:
                    keys = self._keys()
                    error = records.clean_text(str(bad), records.ERROR_LIMIT, keys)
                    result.raw, result.error = records.clean_text(bad.raw, records.RAW_LIMIT, keys), error
                    result.errors.append(error)
                    messages = [*messages, AIMessage(content=bad.raw), HumanMessage(content=reask_text(error))]
            else:
                log.warning("%s/%s: no valid answer after %d tries: %s", request.role, request.mode, result.attempts, result.error)
        except _TransportFailure as failure:
            result.error = self._redact(str(failure))
            log.warning("%s/%s: %s", request.role, request.mode, result.error)
        if result.ok:
            result.error = None
        result.latency_s = time.perf_counter() - started
        return result.clean(*self._own_key())

    def ask_many(self, requests: list[AgentRequest]) -> list[AgentResult]:
        if len(requests) <= 1:
            return [self.ask(r) for r in requests]
        # The pool only keeps enough threads busy; the endpoint semaphore is what bounds requests.
        with ThreadPoolExecutor(max_workers=min(len(requests), self.config.max_concurrency)) as pool:
            return list(pool.map(self.ask, requests))

    # --- pieces -------------------------------------------------------------------------------

    def _messages(self, request: AgentRequest) -> list[BaseMessage]:
        system, user = render(request.template, request.template_values())
        content: list[dict] = [{"type": "text", "text": user}]
        content += [{"type": "image_url", "image_url": {"url": png_data_url(p)}} for p in request.images()]
        return [SystemMessage(content=system), HumanMessage(content=content)]

    def _runnable(self, schema: type[BaseModel]):
        if schema not in self._structured:
            # A JSON schema (not the class) so that the SDK does not parse the answer itself and
            # raise before the raw text is seen; strict=True makes every field required. Sent as
            # it is, in the body, from the chat model itself: `with_structured_output(...,
            # include_raw=True)` wraps each call in two RunnableParallels that start thread pools
            # and parses the answer again, and `response_format=` as a parameter takes the SDK's
            # `parse` path, which walks the whole schema through its typed-parameter transform.
            # Both cost CPU under the GIL on every call, and that CPU, not any pool or bound, is
            # what held the requests in flight below the bound (BENCHMARKS.md). The request's
            # body is the same either way.
            function = convert_to_openai_function(_without_defaults(schema.model_json_schema()), strict=True)
            function["schema"] = function.pop("parameters")
            self._structured[schema] = self._chat.bind(
                extra_body={"response_format": {"type": "json_schema", "json_schema": function}})
        return self._structured[schema]

    def _answer(self, request: AgentRequest, messages: list[BaseMessage], result: AgentResult) -> BaseModel:
        schema = request.answer_schema
        message = self._call(self._runnable(schema), messages, result)
        text = _text_of(message)
        finish = message.response_metadata.get("finish_reason")
        if finish in ("length", "content_filter"):
            raise _BadAnswer(f"the answer was cut off (finish_reason {finish!r}); answer more briefly", text)
        if not text.strip():
            raise _BadAnswer("the answer was empty; reply with one JSON object", text)
        # The raw text is validated, not langchain's `parsed`: its JSON parser completes
        # truncated JSON, and a half answer must be sent back, not taken.
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

    def _call(self, runnable, messages: list[BaseMessage], result: AgentResult) -> AIMessage:
        cfg = self.config
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(cfg.max_retries + 1), wait=self._wait, reraise=True,
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, (openai.APIError, _BadReply)) and _retryable(e)),
            before_sleep=lambda state: setattr(result, "retries", result.retries + 1))
        try:
            for attempt in retrying:
                with attempt:
                    with self._slots:  # released before the wait: a back-off must not hold up other requests
                        return runnable.invoke(messages)
        except (openai.APIError, _BadReply) as e:
            if _refuses_us(e):
                raise AgentEndpointError(
                    f"agents.{self.role}: {cfg.base_url} answered {e.status_code} for model {cfg.model!r}; "
                    "check base_url, model and api_key_env"
                ) from None
            if not _retryable(e):
                raise _TransportFailure(f"request rejected: {type(e).__name__}: {self._short(e)}") from None
            raise _TransportFailure(
                f"gave up after {result.retries + 1} tries: {type(e).__name__}: {self._short(e)}"
            ) from None
        raise AssertionError("unreachable")

    def _short(self, error: Exception) -> str:
        """One line: the error, and what caused it where the SDK's text says little ("Connection
        error." over a reset, or a body cut short)."""
        text = _one_line(str(error), 300)
        cause = error.__cause__ if isinstance(error, openai.APIConnectionError) else None
        while cause is not None:  # the first cause below the SDK's names the fault
            if not isinstance(cause, openai.APIError):
                text = f"{text} ({type(cause).__name__}: {_one_line(str(cause), 200)})"
                break
            cause = cause.__cause__
        return self._redact(text)

    def _own_key(self) -> tuple[str, ...]:
        return (self._key,) if self._key != NO_KEY else ()

    def _keys(self) -> list[str]:
        """Every configured key as the environment holds it now, and the one this backend sends."""
        return records.current_keys(*self._own_key())

    def _redact(self, text: str) -> str:
        return records.mask(text, self._keys())


class _TransportFailure(Exception):
    """No answer could be had from the endpoint."""
