"""What an agent result may hold once it leaves its backend: no API key, and nothing unbounded.

A server may say anything back: echo the key it was sent, answer with 5 MB of text, or give a
valid answer whose free-text field (a plan's rationale, a judge's reason) holds either. The
result's text goes on to the run folder (agents/*.json, plan.json, judgments.jsonl) and, through
the parsed answer, into the graph state and its checkpoint. So a backend cleans every result
before returning it, as CI systems mask secrets in their logs:

  - the values of every configured key (the environment variables named by the roles'
    `api_key_env`, read when a text is cleaned) are replaced by MASK, in the raw text, the errors
    and every string of the parsed answer;
  - raw text is cut to RAW_LIMIT characters, errors to ERROR_LIMIT and every string of the
    answer to TEXT_LIMIT, each with a note that says it was cut and from how long; a cut keeps
    the head, so it is the same on every run;
  - an answer whose JSON is still over ANSWER_LIMIT (a list of a million entries) is no answer:
    the openai backend sends it back, as it does an answer the schema rejects.
Schema fields with their own `max_length` never reach these limits: the re-ask handles them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable

from pydantic import BaseModel, ValidationError

MASK = "[redacted]"
RAW_LIMIT = 16_000  # a 16-prompt writer answer, pretty-printed, is ~6,000: a failed one is still salvageable
ERROR_LIMIT = 2_000
TEXT_LIMIT = 2_000
ANSWER_LIMIT = 64_000  # the largest valid answer (80 held-out prompts) is ~20,000-25,000 characters of JSON
MIN_KEY_LENGTH = 4  # a shorter value is no credential, and masking it would wreck ordinary text

_lock = threading.Lock()
_key_envs: set[str] = set()


def register_key_env(name: str | None) -> None:
    """Name an environment variable whose value is masked in every result from now on."""
    if name:
        with _lock:
            _key_envs.add(name)


def register_key_envs(agents) -> None:
    """Every role's `api_key_env` of an AgentsConfig (or an iterable of AgentConfig)."""
    for agent in agents.roles().values() if hasattr(agents, "roles") else agents:
        register_key_env(agent.api_key_env)


def current_keys(*extra: str) -> list[str]:
    """The keys to mask now: the registered variables' values as the environment holds them,
    and `extra` (a key a backend read earlier), longest first."""
    with _lock:
        names = sorted(_key_envs)
    values = {os.environ.get(name) or "" for name in names} | set(extra)
    return sorted((v for v in values if len(v) >= MIN_KEY_LENGTH), key=lambda v: (-len(v), v))


def mask(text: str, keys: Iterable[str]) -> str:
    for key in keys:
        if key in text:
            text = text.replace(key, MASK)
        escaped = json.dumps(key)[1:-1]  # as it appears inside a JSON string of the raw text
        if escaped != key and escaped in text:
            text = text.replace(escaped, MASK)
    return text


def cut(text: str, limit: int) -> str:
    """At most `limit` characters: the head, then a note with the original length."""
    if len(text) <= limit:
        return text
    note = f"…[cut: {len(text):,} characters]"
    return text[: max(0, limit - len(note))] + note


def clean_text(text: str, limit: int, keys: Iterable[str]) -> str:
    return cut(mask(text, keys), limit)


def _clean(value, keys: list[str]):
    if isinstance(value, str):
        return clean_text(value, TEXT_LIMIT, keys)
    if isinstance(value, dict):
        return {_clean(k, keys): _clean(v, keys) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clean(v, keys) for v in value)
    return value


def clean_answer(answer: BaseModel, keys: list[str]) -> BaseModel:
    """The answer with keys masked and long strings cut; the same object when nothing changed.
    ValueError (a message a model can act on) when the cleaned answer no longer meets its
    schema or is still over ANSWER_LIMIT."""
    text = answer.model_dump_json()
    if len(text) <= TEXT_LIMIT and not any(key in text or json.dumps(key)[1:-1] != key for key in keys):
        # Nothing to do, and cheap to know: no string is longer than the whole JSON, and a key
        # that needs no JSON escaping appears in the JSON wherever it appears in a string.
        return answer
    dumped = answer.model_dump()
    cleaned = _clean(dumped, keys)
    if cleaned != dumped:
        try:
            answer = type(answer).model_validate(cleaned)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"texts over {TEXT_LIMIT:,} characters are cut and API keys are masked, and then the "
                             f"answer is invalid ({where}: {first['msg']}); keep every text under {TEXT_LIMIT:,} "
                             "characters") from None
    size = len(answer.model_dump_json())
    if size > ANSWER_LIMIT:
        raise ValueError(f"the answer is {size:,} characters of JSON; answer in at most {ANSWER_LIMIT:,}")
    return answer


def clean_record(record: dict, keys: list[str]) -> dict:
    """A result's JSON record, cleaned (for a result that no backend cleaned)."""
    return _clean(record, keys) | {
        "raw": clean_text(record.get("raw") or "", RAW_LIMIT, keys),
        "error": None if record.get("error") is None else clean_text(record["error"], ERROR_LIMIT, keys),
        "errors": [clean_text(e, ERROR_LIMIT, keys) for e in record.get("errors", [])],
    }
