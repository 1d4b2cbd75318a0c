"""Self-rewarding prompt optimisation ("Self-rewarding large vision-language models for optimizing
prompts in text-to-image generation", Yang et al. 2024): the generator stays frozen and a prompt
rewriter is trained instead.

Per training prompt the rewriter (agents.prompt_writer) samples N = rewrite.rewrites_per_prompt
rewrites (temperature 0.9, top-p 0.9); the frozen generator draws each once, all with the prompt's
seed; the judge (agents.judge, rubric mode) scores every image against the user's prompt on
aesthetics, alignment and preference, 0-5 with a reason, `rubric_samples` times; the overall score
is the sum of the rubric means; the highest- and lowest-scored rewrites form a preference pair,
dropped on a tie (atelier.rewriter.pairs). Pairs accumulate across rounds (train.accumulate).
Training: the builtin rewriter counts the preferred phrasing per pattern over the pairs
(atelier.rewriter.rule); a model rewriter is fine-tuned with DPO (trl) into a LoRA when
rewrite.train_model names its weights (atelier.rewriter.train). The round's "adapter" is the
rewriter's state folder (atelier.rewriter.rewriter); held-out evaluation draws the rewriter's
single best guess of each held-out prompt with the frozen generator, paired with the raw prompts.

Loop hooks (atelier.graphs.nodes calls them where a strategy has them): `rewrite_for_training`
(generate) and `best_rewrites` (evaluate). Per-prompt stories go to round_NNN/stories.jsonl.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from atelier.atomic import staged_dir, write_json_atomic, write_jsonl_atomic
from atelier.rewriter.export import trl_rows, write_pairs
from atelier.rewriter.pairs import RUBRICS, overall_score, preference_pair, rubric_means
from atelier.rewriter.rewriter import RULE_FILE, STATE_FILE, load_rewriter, world_language
from atelier.rewriter.rule import learn_rule
from atelier.runs import read_json as _read_json
from atelier.runs import read_jsonl as _read_jsonl
from atelier.runs import round_dir as _round_dir
from atelier.worlds.base import Progress, World, WorldPrompt

log = logging.getLogger("atelier.strategies")

RUBRICS_FILE = "rubrics.jsonl"  # under a round's folder: every candidate with its rubric samples
STORIES_FILE = "stories.jsonl"  # under a round's folder: one story per user prompt


class Rewrite:
    name = "rewrite"

    def __init__(self, config):
        self.config = config
        self.settings = config.rewrite

    # --- loop hooks -----------------------------------------------------------------------

    def rewrite_for_training(self, prompts: Sequence[WorldPrompt], rewriter: str | None, record_file: Path,
                             seed: int) -> list[list[str]]:
        """Up to N distinct rewrites of each prompt from the rewriter state `rewriter` (None: the
        untrained one); recorded in `record_file` with the rewrites that failed (garbage, off the
        world's language, changed meaning), and read back from it on a re-run."""
        if record_file.exists():
            return [p["rewrites"] for p in _read_json(record_file)["prompts"]]
        texts, records = load_rewriter(self.config, rewriter).sample([p.text for p in prompts],
                                                                     self.settings.rewrites_per_prompt, seed)
        write_json_atomic(record_file, {"rewriter": rewriter, "prompts": [{**r, "rewrites": t} for r, t in zip(records, texts)]})
        return texts

    def best_rewrites(self, prompts: Sequence[WorldPrompt], rewriter: str, record_file: Path) -> list[str]:
        """The rewriter's single best guess of each prompt (no judging); recorded, read back on a re-run."""
        if record_file.exists():
            return [p["rewrite"] for p in _read_json(record_file)["prompts"]]
        best, records = load_rewriter(self.config, rewriter).best([p.text for p in prompts])
        write_json_atomic(record_file, {"rewriter": rewriter, "prompts": [{**r, "rewrite": b} for r, b in zip(records, best)]})
        return best

    # --- the scoring node -----------------------------------------------------------------

    def extra_nodes(self) -> Sequence[tuple[str, object]]:
        from atelier.graphs.nodes import loop_node

        return (("score_rewrites", loop_node("score_rewrites")(self.score_rewrites)),)

    def score_rewrites(self, state: dict, ctx) -> dict:
        """Every candidate of the round scored by the judge's rubrics (rubric_samples answers each),
        in round_NNN/rubrics.jsonl; the round's stories in round_NNN/stories.jsonl."""
        from atelier.agents.judge import RubricJudgeRequest, ask_judge

        round_dir = _round_dir(ctx.run_dir, state["round"])
        out = round_dir / RUBRICS_FILE
        if not out.exists():
            rows = [j for f in state["judged"] if Path(f).name != RUBRICS_FILE for j in _read_jsonl(Path(f))]
            prompts = [WorldPrompt.model_validate(p) for p in _read_json(Path(state["prompts_file"]))]
            k = self.settings.rubric_samples
            requests = [RubricJudgeRequest(image=row["file"], prompt=row["prompt"], asked=prompts[row["prompt_index"]].asked,
                                           detections=tuple(row.get("detections") or ())) for row in rows for _ in range(k)]
            results = ask_judge(ctx.config.agents.judge, requests)
            scored = []
            for n, row in enumerate(rows):
                answers = results[n * k:(n + 1) * k]
                samples = [r.answer.model_dump(mode="json") if r.ok else None for r in answers]
                means = rubric_means(samples)
                scored.append({**row, "rubric_samples": samples, "rubric_means": means, "rewrite_score": overall_score(means),
                               "rubric_failures": [{"error": r.error, "raw": r.raw} for r in answers if not r.ok]})
            write_jsonl_atomic(round_dir / STORIES_FILE, self._stories(state["round"], scored, round_dir / "rewrites"))
            write_jsonl_atomic(out, scored)
        return {"judged": [str(out)]}

    def _stories(self, round_no: int, scored: list[dict], records_dir: Path) -> list[dict]:
        failures: dict[str, list] = defaultdict(list)
        for record in sorted(records_dir.glob("batch_*.json")):
            for p in _read_json(record)["prompts"]:
                failures[p["prompt"]] += p.get("failures", [])
        stories = []
        for index, candidates in sorted(_by_prompt(scored).items()):
            pair, why = preference_pair([_candidate(c) for c in candidates])
            first = candidates[0]
            stories.append({
                "round": round_no, "prompt_index": index, "prompt": first["prompt"], "seed": first["seed"],
                "rewrites": [{"text": c["rewrite"], "file": c["file"], "score": c["rewrite_score"], "means": c["rubric_means"],
                              "reasons": {r: [s[r]["reason"] for s in c["rubric_samples"] if s] for r in RUBRICS},
                              "judge_failures": len(c["rubric_failures"])} for c in candidates],
                "failed_rewrites": failures.get(first["prompt"], []),
                "pair": None if pair is None else {"chosen": pair["chosen"]["text"], "rejected": pair["rejected"]["text"],
                                                   "chosen_score": pair["chosen"]["score"],
                                                   "rejected_score": pair["rejected"]["score"]},
                "pair_reason": why,
                # top-level image fields: the report shows them as images (atelier.report.stories)
                "chosen_image": None if pair is None else pair["chosen"]["file"],
                "rejected_image": None if pair is None else pair["rejected"]["file"],
            })
        return stories

    # --- curate and train -----------------------------------------------------------------

    def curate(self, judgments: Sequence[dict], world: World, heldout: Sequence[WorldPrompt]) -> list[dict]:
        """One row per kept pair: the chosen rewrite's image and text, the rejected one alongside."""
        held = {p.text for p in heldout}
        rows = []
        for _, candidates in sorted(_by_prompt([j for j in judgments if "rewrite_score" in j]).items()):
            pair, _ = preference_pair([_candidate(c) for c in candidates])
            if pair is None or {pair["chosen"]["text"], pair["rejected"]["text"]} & held:
                continue
            chosen, rejected = pair["chosen"], pair["rejected"]
            rows.append({"file": chosen["file"], "text": chosen["text"], "weight": 1.0, "kind": "preference_pair",
                         "prompt": candidates[0]["prompt"], "rejected": rejected["text"], "rejected_file": rejected["file"],
                         "chosen_score": chosen["score"], "rejected_score": rejected["score"]})
        return rows

    def train(self, world: World, datasets: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
              progress: Progress | None = None, spec=None) -> dict:
        """The next rewriter state in `out` from the pairs of `datasets` (written atomically; a
        finished `out` is read back, not retrained)."""
        if (out / STATE_FILE).exists():
            return _read_json(out / STATE_FILE)
        pairs = [{"prompt": m["original_prompt"], "chosen": m["text"], "rejected": m["rejected"],
                  "chosen_score": m.get("chosen_score"), "rejected_score": m.get("rejected_score")}
                 for d in datasets for m in _read_jsonl(Path(d) / "metadata.jsonl") if m.get("kind") == "preference_pair"]
        request_type, _, features = world_language(self.config)
        with staged_dir(out) as tmp:
            write_pairs(trl_rows(pairs, lambda p: request_type(prompt=p).messages()), tmp)
            if self.config.agents.prompt_writer.backend == "builtin":
                rule = learn_rule(((features(p["prompt"], p["chosen"]), features(p["prompt"], p["rejected"])) for p in pairs),
                                  self.settings.rule_min_net)
                write_json_atomic(tmp / RULE_FILE, rule.model_dump(mode="json"))
                state = {"kind": "builtin_rule", "pairs": len(pairs), "rule": rule.describe()}
                if progress is not None:
                    progress(1, 1, 0.0)
            elif self.settings.train_model is not None:
                from atelier.rewriter.train import DPOSettings, train_rewriter

                init = None
                if init_adapter is not None and _read_json(Path(init_adapter) / STATE_FILE).get("kind") == "lora":
                    init = Path(init_adapter) / "lora"
                s = self.settings
                summary = train_rewriter(tmp / "pairs.jsonl", s.train_model, tmp / "lora",
                                         DPOSettings(beta=s.beta, learning_rate=s.learning_rate, epochs=s.epochs,
                                                     batch_size=s.batch_size, lora_rank=s.lora_rank,
                                                     lora_alpha=s.lora_alpha, seed=seed,
                                                     device=self.config.device),
                                         init_lora=init, progress=progress)
                state = {"kind": "lora", "lora": "lora", "base_model": s.train_model, "pairs": len(pairs), **summary}
            else:
                state = {"kind": "unchanged", "pairs": len(pairs)}
            write_json_atomic(tmp / STATE_FILE, state)
        log.info("rewriter trained on %d pairs: %s", len(pairs), state.get("rule", state["kind"]))
        return state


def _candidate(row: dict) -> dict:
    return {"text": row["rewrite"], "score": row["rewrite_score"], "file": row["file"]}


def _by_prompt(rows: Sequence[dict]) -> dict[int, list[dict]]:
    """Rows per prompt index, in the order they were drawn."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["prompt_index"]].append(row)
    return groups
