"""A rewriter's state folder and the two rewriters that read it.

State folder (what `decide` promotes; never loaded into the generator): rewriter.json says its
kind, and holds next to it what the kind needs:
  builtin_rule  rule.json: the preferred phrasing per pattern (atelier.rewriter.rule)
  lora          lora/: a peft LoRA of `base_model` (atelier.rewriter.train), served by vLLM
  unchanged     the configured model rewriter as it is (no train_model was set)
and the pairs it was trained on (pairs.jsonl, pairs.parquet). No folder (None) is the rewriter
before any training: the builtin one with no rule, or the configured model.

`sample(prompts, n, seed)` draws up to n distinct rewrites per prompt (the candidates of a
round); `best(prompts)` gives the single best guess per prompt (generation, evaluation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from atelier.agents.backends import backend_for
from atelier.config import AgentConfig, Config
from atelier.rewriter.request import RewriteOneRequest
from atelier.rewriter.rule import PhrasingRule

log = logging.getLogger("atelier.rewriter")

STATE_FILE = "rewriter.json"
RULE_FILE = "rule.json"


def read_state(folder: str | Path | None) -> dict:
    """The state of a rewriter folder ({'kind': 'initial'} for None); ValueError for a folder
    that is not one."""
    if folder is None:
        return {"kind": "initial"}
    path = Path(folder) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{folder}: not a rewriter folder (no readable {STATE_FILE})") from None
    if state.get("kind") not in ("builtin_rule", "lora", "unchanged"):
        raise ValueError(f"{path}: unknown rewriter kind {state.get('kind')!r}")
    return state


def world_language(config: Config) -> tuple[type[RewriteOneRequest], Callable[[str], list[str]] | None,
                                            Callable[[str, str], dict[str, str]] | None]:
    """(request type, phrasings, phrasing features) of the config's world (atelier.worlds.rewrite_language)."""
    from atelier.worlds import rewrite_language

    return rewrite_language(config)


class BuiltinRewriter:
    """Rewrites by choosing among the world's phrasings: uniformly before any pair, then weighted by
    the learned rule (utility u -> weight exp(u / temperature), nucleus `top_p`)."""

    def __init__(self, config: Config, rule: PhrasingRule | None):
        _, self.phrasings, self.features = world_language(config)
        if self.phrasings is None:
            raise ValueError(f"the builtin rewriter has no phrasings of the {config.world_name} world")
        self.rule = rule or PhrasingRule()
        self.settings = config.rewrite

    def _utilities(self, prompt: str) -> tuple[list[str], list[int]]:
        texts = self.phrasings(prompt)
        return texts, [self.rule.utility(self.features(prompt, t)) for t in texts]

    def sample(self, prompts: Sequence[str], n: int, seed: int) -> tuple[list[list[str]], list[dict]]:
        out, records = [], []
        for k, prompt in enumerate(prompts):
            texts, utilities = self._utilities(prompt)
            weights = _weights(utilities, self.settings.temperature, self.settings.top_p)
            rng = np.random.default_rng([seed, k])
            # Draws without replacement in proportion to the weights (Gumbel top-k).
            keys = np.where(weights > 0, np.log(np.maximum(weights, 1e-300)) + rng.gumbel(size=len(texts)), -np.inf)
            order = [i for i in np.argsort(-keys, kind="stable") if weights[i] > 0][:n]
            out.append([texts[i] for i in order])
            records.append({"prompt": prompt, "phrasings": len(texts), "failures": []})
        return out, records

    def best(self, prompts: Sequence[str]) -> tuple[list[str], list[dict]]:
        best = []
        for prompt in prompts:
            texts, utilities = self._utilities(prompt)
            best.append(texts[int(np.argmax(utilities))])  # the first of equals: the prompt as written before any rule
        return best, [{"prompt": p, "failures": []} for p in prompts]


def _weights(utilities: Sequence[int], temperature: float, top_p: float) -> np.ndarray:
    u = np.asarray(utilities, dtype=float)
    if temperature == 0:
        w = (u == u.max()).astype(float)
    else:
        w = np.exp((u - u.max()) / temperature)
    p = w / w.sum()
    order = np.argsort(-p, kind="stable")
    keep = np.zeros(len(p), dtype=bool)
    total, last = 0.0, None
    for i in order:  # the smallest set of most likely phrasings reaching top_p; equals of the last one kept too
        if total >= top_p - 1e-12 and p[i] < last - 1e-12:
            break
        keep[i], total, last = True, total + p[i], p[i]
    return np.where(keep, p, 0.0)


class ModelRewriter:
    """A model behind the prompt writer's endpoint (agents.prompt_writer), as it is or with a
    trained LoRA that the vLLM server loads at run time (POST /v1/load_lora_adapter; the server
    runs with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""

    def __init__(self, config: Config, state: dict, folder: Path | None):
        self.request_type, _, _ = world_language(config)
        self.settings = config.rewrite
        agent = config.agents.prompt_writer
        if state["kind"] == "lora":
            agent = agent.model_copy(update={"model": load_lora_into_server(agent, Path(folder) / state["lora"])})
        self.agent = agent

    def _ask(self, prompts: Sequence[str], n: int, temperature: float, top_p: float | None = None):
        agent = self.agent.model_copy(update={"temperature": temperature, "top_p": top_p})
        requests = [self.request_type(prompt=p) for p in prompts for _ in range(n)]
        results = backend_for(agent, "prompt_writer").ask_many(requests)
        return [results[k * n:(k + 1) * n] for k in range(len(prompts))]

    def sample(self, prompts: Sequence[str], n: int, seed: int) -> tuple[list[list[str]], list[dict]]:
        out, records = [], []
        for prompt, results in zip(prompts, self._ask(prompts, n, self.settings.temperature, self.settings.top_p)):
            texts = []
            for r in results:
                if r.ok and r.answer.rewrite.strip() not in texts:
                    texts.append(r.answer.rewrite.strip())
            out.append(texts)
            records.append({"prompt": prompt, "failures": [{"error": r.error, "raw": r.raw} for r in results if not r.ok],
                            "duplicates": sum(r.ok for r in results) - len(texts)})
        return out, records

    def best(self, prompts: Sequence[str]) -> tuple[list[str], list[dict]]:
        best, records = [], []
        for prompt, (result,) in zip(prompts, self._ask(prompts, 1, 0.0)):
            # A failed best guess falls back to the user's prompt: generation never stops for it.
            best.append(result.answer.rewrite.strip() if result.ok else prompt)
            records.append({"prompt": prompt, "failures": [] if result.ok else [{"error": result.error, "raw": result.raw}]})
        return best, records


def load_rewriter(config: Config, folder: str | Path | None) -> BuiltinRewriter | ModelRewriter:
    """The rewriter of a state folder (None: the untrained one) under this config."""
    state = read_state(folder)
    if config.agents.prompt_writer.backend == "builtin":
        if state["kind"] not in ("initial", "builtin_rule"):
            raise ValueError(f"{folder}: a {state['kind']} rewriter needs a model prompt writer (agents.prompt_writer)")
        rule = PhrasingRule.model_validate_json((Path(folder) / RULE_FILE).read_text()) if folder is not None else None
        return BuiltinRewriter(config, rule)
    if state["kind"] == "builtin_rule":
        raise ValueError(f"{folder}: a builtin rule; set agents.prompt_writer.backend: builtin to use it")
    return ModelRewriter(config, state, Path(folder) if folder is not None else None)


def served_name(lora: Path) -> str:
    """The name a LoRA is served under: stable for one folder, distinct for two."""
    return "atelier-rewriter-" + hashlib.sha256(str(lora.resolve()).encode()).hexdigest()[:12]


def load_lora_into_server(agent: AgentConfig, lora: Path) -> str:
    """Load the LoRA at `lora` into the vLLM server of `agent` (runtime adapter loading) and return
    the model name to ask for. A server that has it already answers 400 'already loaded': fine."""
    name = served_name(lora)
    body = json.dumps({"lora_name": name, "lora_path": str(lora.resolve())}).encode()
    request = urllib.request.Request(agent.base_url.rstrip("/") + "/load_lora_adapter", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=agent.timeout_s):
            pass
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        if "already" not in text.lower():
            raise ValueError(f"agents.prompt_writer: {agent.base_url} refused to load the rewriter's LoRA ({e.code}: "
                             f"{text[:200]}); start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True") from None
    except (urllib.error.URLError, OSError) as e:
        raise ValueError(f"agents.prompt_writer: cannot reach {agent.base_url} to load the rewriter's LoRA ({e})") from None
    log.info("rewriter LoRA %s served as %s", lora, name)
    return name


