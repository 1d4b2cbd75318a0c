"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat protocol, scripted per test.

It serves GET /v1/models and POST /v1/chat/completions. A script decides each reply from the
request body and its index: a right answer for the schema asked for (by the JSON schema's name),
invalid JSON, JSON off the schema, an empty answer, an HTTP 500 or 429, or any of these after a
delay; and, below the protocol, a 200 whose body is not JSON (an HTML page, plain text), a JSON
body cut short (by a proxy, or by a connection closed mid-body) and a connection closed with no
reply at all.
Every request's body and headers are kept, and so is the most requests ever in flight at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from atelier.worlds.shapes.heldout import is_heldout
from atelier.worlds.shapes.scene import COLOURS, SHAPES, parse


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # the assistant's text; None with a non-200 status
    delay: float = 0.0
    finish_reason: str = "stop"
    body: bytes | None = None  # sent as the HTTP body instead of a chat completion
    content_type: str = "application/json"
    cut_at: int | None = None  # write only this many bytes of the body (Content-Length says all), then close
    drop: bool = False  # close the connection without any reply
    unsized: bool = False  # send `body` with no Content-Length, then close (the client reads until the close)
    encoding: str | None = None  # a Content-Encoding header for `body` (say "gzip": the body is compressed)


Script = Callable[[dict, int], Reply]

# --- right answers, by schema name ------------------------------------------------------------


def user_text(body: dict) -> str:
    """The text of the first user message (the request itself, before any re-ask)."""
    for message in body["messages"]:
        if message["role"] == "user":
            content = message["content"]
            return content if isinstance(content, str) else "".join(p.get("text", "") for p in content if p["type"] == "text")
    return ""


def image_urls(body: dict) -> list[str]:
    return [p["image_url"]["url"] for m in body["messages"] if isinstance(m["content"], list)
            for p in m["content"] if p["type"] == "image_url"]


def schema_name(body: dict) -> str:
    return body.get("response_format", {}).get("json_schema", {}).get("name", "")


def _plan(body: dict) -> dict:
    return {"objects": [], "attributes": ["colour", "shape"], "relations": ["left of", "right of"], "counts": [],
            "colours": list(COLOURS), "shapes": list(SHAPES), "style": [],
            "questions": [{"id": 1, "text": "Is every shape drawn whole?", "positive": True, "depends_on": []}],
            "metric": "relation_accuracy_cond", "rationale": "the goal says left and right"}


_PHRASE = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}


def _prompts(body: dict) -> dict:
    text = user_text(body)
    n = int(re.search(r"Write exactly (\d+) different", text).group(1))
    target = re.search(r"must show at least one (\w+ \w+) \(", text).group(1)
    named = re.search(r"relations to practise: ([^(]+?) \(", text).group(1)
    relations = ["left of"] if named.startswith("none") else named.split(", ")
    prompts = []
    for other in (f"{c} {s}" for c in COLOURS for s in SHAPES):
        for relation in relations:
            for first, second in ((target, other), (other, target)):
                caption = f"a {first} {_PHRASE[relation]} a {second}"
                if other != target and not is_heldout(parse(caption)) and len(prompts) < n:
                    prompts.append({"text": caption, "target_class": target, "relation": relation, "attributes": [],
                                    "objects": [{"name": first, "count": 1}, {"name": second, "count": 1}]})
    return {"prompts": prompts}


def yes_no(question: str, image_url: str) -> str:
    """A judge with a view: nothing unasked; relations right for about half the images."""
    if "other than" in question:
        return "no"
    if " of the " in question or " above the " in question or " below the " in question:
        return "yes" if zlib.crc32(image_url.encode()) % 2 else "no"
    return "yes"


def _answers(body: dict) -> dict:
    image = (image_urls(body) or [""])[0]
    questions = re.findall(r"^(\d+)\. (.+)$", user_text(body), flags=re.M)
    return {"answers": [{"id": int(i), "answer": yes_no(q, image)} for i, q in questions]}


def _rubric() -> dict:
    score = {"score": 4, "reason": "clean shapes"}
    return {"aesthetics": score, "alignment": score, "preference": score}


ANSWERS: dict[str, Callable[[dict], dict]] = {
    "TargetSpec": _plan,
    "WrittenPrompts": _prompts,
    "Rewrites": lambda body: {"rewrites": ["one red circle to the left of a blue triangle"]},
    "YesNoAnswers": _answers,
    "Rubric": lambda body: _rubric(),
    "PairRubric": lambda body: {"first": _rubric(), "second": _rubric(), "preferred": "tie", "reason": "alike"},
    "MatchVerdict": lambda body: {"matches": True, "reason": "all there"},
    "Critique": lambda body: {"matches_prompt": False, "poorly_rendered": ["a red circle"], "artifacts": [],
                              "deviations": [{"kind": "missing", "phrase": "a red circle", "objects": ["red circle"],
                                              "detail": "no red circle is drawn"}], "summary": "The red circle is missing."},
    "EditInstructions": lambda body: {"instructions": ["Add a red circle on the left"], "rationale": "it is missing"},
}


def right_answer(body: dict) -> str:
    return json.dumps(ANSWERS[schema_name(body)](body))


# --- right answers of the open_vocab world (atelier/prompts/*_open_vocab.txt) ------------------
# Pure functions of the request, so that a killed and resumed run is told what an uninterrupted
# one was. The judge answers "Is there ...?" with yes and every other question from the image.


def system_text(body: dict) -> str:
    return next((m["content"] for m in body["messages"] if m["role"] == "system" and isinstance(m["content"], str)), "")


def _line(text: str, label: str) -> str:
    """What follows '- <label>: ' on its line."""
    return re.search(rf"^- {re.escape(label)}: (.+)$", text, flags=re.M).group(1).strip()


def _a(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


OPEN_VOCAB_CLASSES = ("dog", "cat", "horse", "elephant", "giraffe")


def _open_vocab_plan(body: dict) -> dict:
    system, user = system_text(body), user_text(body)
    goal = re.search(r'^"(.+)"$', user, flags=re.M).group(1).lower()
    configured = _line(system, "object classes")
    classes = ([c for c in OPEN_VOCAB_CLASSES if re.search(rf"\b{c}s?\b", goal)]
               if configured.startswith("none configured") else configured.split(", "))
    relations = _line(system, "relations it can check (between two objects, by box centres)")
    relations = [] if relations.startswith("from the goal") else relations.split(", ")
    if not relations and re.search(r"\bleft\b|\bright of\b", goal):
        relations = ["left of", "right of"]
    questions: list[dict] = []
    for name in classes:
        first = len(questions) + 1
        questions.append({"id": first, "text": f"Is there {_a(name)}?", "positive": True, "depends_on": []})
        if not relations:
            questions += [
                {"id": first + 1, "text": f"Does the {name} look like a real photograph?", "positive": True,
                 "depends_on": [first]},
                {"id": first + 2, "text": f"Is the {name} deformed or missing parts?", "positive": False,
                 "depends_on": [first]},
            ]
    return {"objects": classes, "attributes": [] if relations else ["realism"], "relations": relations, "counts": [],
            "colours": [], "shapes": [], "style": [], "questions": questions,
            "metric": "relation_accuracy_cond" if relations else "question_score",
            "rationale": "the goal names placement" if relations else "the goal asks how the animals look"}


def _open_vocab_prompts(body: dict) -> dict:
    """`n` prompts that show the target class, in the relations to practise (or none), in the
    settings that may be used, never pairing a held-out pair of classes."""
    system, user = system_text(body), user_text(body)
    n = int(re.search(r"Write exactly (\d+) different", user).group(1))
    target = re.search(r"must show at least one (.+?) \(this is", user).group(1)
    classes = _line(user, "object classes").split(", ")
    named = re.search(r"^- relations to practise: (.+?) \(when", user, flags=re.M).group(1)
    relations = [] if named.startswith("none") else named.split(", ")
    settings = _line(user, "settings that may be used (or none)")
    settings = [None] + ([] if settings == "any" else settings.split(", "))
    held = _line(system, "these pairs of classes together in one prompt")
    held_pairs = [] if held == "none" else [set(p.split(" + ")) for p in held.split("; ")]
    texts: list[tuple[str, list[str], str | None]] = []
    for setting in settings:
        where = f" {setting}" if setting else ""
        if relations:
            for other in (c for c in classes if c != target and {c, target} not in held_pairs):
                for relation in relations:
                    texts += [(f"{_a(target)} {_PHRASE[relation]} {_a(other)}{where}", [target, other], relation),
                              (f"{_a(other)} {_PHRASE[relation]} {_a(target)}{where}", [other, target], relation)]
        else:
            texts += [(f"{template} {_a(target)}{where}", [target], None)
                      for template in ("a photo of", "a realistic photo of", "a close-up photo of")]
    return {"prompts": [{"text": text, "target_class": target, "relation": relation, "attributes": [],
                         "objects": [{"name": name, "count": 1} for name in names]}
                        for text, names, relation in texts[:n]]}


def open_vocab_yes_no(question: str, image_url: str) -> str:
    if question.startswith("Is there"):
        return "yes"
    return "yes" if zlib.crc32((question + image_url).encode()) % 2 else "no"


def _open_vocab_answers(body: dict) -> dict:
    image = (image_urls(body) or [""])[0]
    questions = re.findall(r"^(\d+)\. (.+)$", user_text(body), flags=re.M)
    return {"answers": [{"id": int(i), "answer": open_vocab_yes_no(q, image)} for i, q in questions]}


OPEN_VOCAB_ANSWERS: dict[str, Callable[[dict], dict]] = {
    "TargetSpec": _open_vocab_plan,
    "WrittenPrompts": _open_vocab_prompts,
    "YesNoAnswers": _open_vocab_answers,
}


def open_vocab(body: dict, n: int) -> Reply:
    """A right answer for the open_vocab world (the planner, the prompt writer, the yes/no judge);
    other schemas as `correct` answers them."""
    answer = OPEN_VOCAB_ANSWERS.get(schema_name(body))
    return Reply(content=json.dumps(answer(body))) if answer else correct(body, n)


# --- behaviours -------------------------------------------------------------------------------


def correct(body: dict, n: int) -> Reply:
    return Reply(content=right_answer(body))


def invalid_json(body: dict, n: int) -> Reply:
    return Reply(content='{"answers": [yes, no')


def schema_violation(body: dict, n: int) -> Reply:
    return Reply(content='{"verdict": "looks fine to me"}')


def empty(body: dict, n: int) -> Reply:
    return Reply(content="")


def http500(body: dict, n: int) -> Reply:
    return Reply(status=500)


def http429(body: dict, n: int) -> Reply:
    return Reply(status=429)


HTML_PAGE = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"


def html_page(body: dict, n: int) -> Reply:
    """A proxy's error page, sent with 200."""
    return Reply(body=HTML_PAGE, content_type="text/html")


def not_json(body: dict, n: int) -> Reply:
    """Plain text labelled as JSON, sent with 200."""
    return Reply(body=b"upstream connect error or disconnect/reset before headers")


def completion(body: dict, n: int, content: str, finish_reason: str = "stop") -> bytes:
    return json.dumps({
        "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }).encode()


def truncated_json(body: dict, n: int) -> Reply:
    """A right completion cut in half by a proxy (Content-Length agrees with the half)."""
    whole = completion(body, n, right_answer(body))
    return Reply(body=whole[: len(whole) // 2])


def cut_connection(body: dict, n: int) -> Reply:
    """A right completion whose connection closes half-way through the body."""
    whole = completion(body, n, right_answer(body))
    return Reply(body=whole, cut_at=len(whole) // 2)


def dropped(body: dict, n: int) -> Reply:
    """The connection closed with no reply (a server restarting, a reset)."""
    return Reply(drop=True)


def slow(seconds: float, then: Script = correct) -> Script:
    def script(body: dict, n: int) -> Reply:
        reply = then(body, n)
        reply.delay = seconds
        return reply

    return script


def sequence(*first: Script, then: Script = correct) -> Script:
    """The i-th request gets first[i]; the rest get `then`."""
    return lambda body, n: (first[n] if n < len(first) else then)(body, n)


# --- the server -------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of 32+ connections must not wait for SYN retries
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # a client that timed out and left: expected
        pass


class OpenAIServer:
    """`with OpenAIServer(script) as server:` ... `server.url` is the base_url (…/v1)."""

    def __init__(self, script: Script = correct, model: str = "scripted-vlm"):
        self.script = script
        self.model = model
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def schemas(self) -> list[str]:
        return [schema_name(b) for b in self.requests]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two small writes: no 40 ms Nagle + delayed-ACK stall

            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict | bytes, content_type: str = "application/json",
                      cut_at: int | None = None, unsized: bool = False, encoding: str | None = None) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                if unsized:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if cut_at is None:
                    self.wfile.write(data)
                else:
                    self.wfile.write(data[:cut_at])
                    self.wfile.flush()
                    self.close_connection = True

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model", "owned_by": "tests"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.script(body, n)
                    time.sleep(reply.delay)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                if reply.drop:
                    self.close_connection = True
                    return
                if reply.body is not None:
                    self._send(reply.status, reply.body, reply.content_type, reply.cut_at, reply.unsized, reply.encoding)
                    return
                if reply.status != 200:
                    self._send(reply.status, {"error": {"message": "scripted failure", "type": "server_error", "code": reply.status}})
                    return
                self._send(200, completion(body, n, reply.content, reply.finish_reason))

        return Handler


# --- servers that say too much: keys echoed, answers of megabytes ------------------------------

FREE_TEXT = ("rationale", "reason", "summary", "detail")  # the answers' free-text fields


def bearer(headers: dict) -> str:
    """The API key a request carried (its `Authorization: Bearer` token)."""
    return headers.get("authorization", "").removeprefix("Bearer ")


def with_text(answer, text: str, fields: tuple[str, ...] = FREE_TEXT):
    """The answer with `text` added to its free-text `fields`, at every depth."""
    if isinstance(answer, dict):
        return {k: f"{v} {text}" if k in fields and isinstance(v, str) else with_text(v, text, fields)
                for k, v in answer.items()}
    if isinstance(answer, list):
        return [with_text(v, text, fields) for v in answer]
    return answer


def never(body: dict, n: int) -> bool:
    return False


def saying(text: Callable[[dict, int], str], bad: Callable[[dict, int], bool] = never,
           fields: tuple[str, ...] = FREE_TEXT, schemas: tuple[str, ...] | None = None) -> Script:
    """Right answers whose free-text `fields` (of the `schemas` named; None = all) also say
    text(body, n); where bad(body, n), an answer that is not JSON and holds that text."""

    def script(body: dict, n: int) -> Reply:
        said = text(body, n)
        if bad(body, n):
            return Reply(content=f'{{"answers": [{said}')
        answer = ANSWERS[schema_name(body)](body)
        if schemas is None or schema_name(body) in schemas:
            answer = with_text(answer, said, fields)
        return Reply(content=json.dumps(answer))

    return script


class EchoKey:
    """A careless server that says back the key each request was sent with: in every right
    answer's free-text fields (a plan's rationale, a judge's reason) and in the invalid answers
    `bad(body, n)` picks. The key is read from the request's headers, so bind the script to its
    server: `script = EchoKey(); with OpenAIServer(script) as server: script.server = server`."""

    def __init__(self, bad: Callable[[dict, int], bool] = never):
        self.server: OpenAIServer | None = None
        self._script = saying(lambda body, n: f"the key is {bearer(self.server.headers[n])}", bad)

    def __call__(self, body: dict, n: int) -> Reply:
        return self._script(body, n)


MEGABYTES_5 = 5 * 1024 * 1024


def huge_text(size: int = MEGABYTES_5) -> str:
    """`size` characters of words, the same every time."""
    words = "the model keeps talking and talking "
    return (words * (size // len(words) + 1))[:size]


def huge(bad: Callable[[dict, int], bool] = never, schemas: tuple[str, ...] = ("TargetSpec",),
         size: int = MEGABYTES_5) -> Script:
    """Answers of `size` characters: where bad(body, n), text that is not JSON; otherwise a right
    answer whose free-text fields without a length limit (the plan's rationale) take `size` more."""
    text = huge_text(size)
    return saying(lambda body, n: text, bad, fields=("rationale",), schemas=schemas)
