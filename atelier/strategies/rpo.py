"""Rich Preference Optimization (RPO; Zhao et al. 2024, "Rich Preference Optimization"): a critic
says what a wrong image gets wrong, an edit-instruction writer turns that into at most three short
edits, the world's editor carries them out, and the judge scores the original and the edited
image on the same questions. An edit judged better by `rpo.margin` (CCSR question score) makes a
preference pair (edited = winner, original = loser); ties, losses and failed edits are recorded
and dropped. Trainer: Diffusion-DPO (Wallace et al. 2023, atelier.tools.dpo) on the LoRA with the
reference = adapters disabled; or SFT on the edited winners (`rpo.objective`).

Nodes, between judge and curate, each per judged batch and resumable (a batch's output file is
written atomically and never redone):

    critique     round_NNN/rpo/critique/batch_XXX.jsonl  the critic on every wrong image
    write_edits  round_NNN/rpo/edits/batch_XXX.jsonl     instructions from each critique
    edit         round_NNN/rpo/edit/batch_XXX/           edited images + manifest.jsonl (seed, settings, outcomes)
    pair         round_NNN/rpo/pair/batch_XXX.jsonl      both verdicts, kept or not, why (the per-pair stories)
                 round_NNN/rpo/pairs.parquet             kept pairs: jpg_0 (edited), jpg_1, label_0 = 1.0, caption
                 round_NNN/stories.jsonl                 one line per sample of the round, for the report

A critic or writer answer that is invalid (garbage) is recorded with its error and the sample
goes on without an edit; nothing is fatal.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from atelier.agents.backends import backend_for
from atelier.agents.critic import Critique
from atelier.agents.edit_writer import EditRequest
from atelier.agents.planner import TargetSpec
from atelier.atomic import staged_dir, write_jsonl_atomic
from atelier.runs import read_json, read_jsonl, round_dir, set_status
from atelier.strategies.rpo_config import editor_name
from atelier.tools.datasets import PreferencePair, write_dpo_parquet
from atelier.worlds.base import Progress, World, WorldPrompt

VERDICT_KEYS = ("ipr_correct", "object_ok", "count_ok", "relation_ok", "question_score", "failed")


def verdict(judgment: dict) -> dict:
    """The judgment fields a story shows."""
    return {k: judgment.get(k) for k in VERDICT_KEYS} | {"found": judgment.get("found")}


def edit_seed(seed: int, round_no: int, image_seed: int) -> int:
    """The edit's seed: from the run's seed, the round and the original image's seed alone."""
    return int(np.random.SeedSequence([seed, round_no, image_seed % 2**32, 19]).generate_state(1)[0])


def pair_decision(original: dict, edited: dict | None, margin: float) -> tuple[bool, str]:
    """(kept, why) for an original judgment and its edit's judgment (None: no edited image)."""
    if edited is None:
        return False, "no edited image"
    if original.get("failed") or edited.get("failed"):
        return False, "a judgment failed"
    before, after = original.get("question_score"), edited.get("question_score")
    if before is None or after is None:
        return False, "no question score to compare"
    gain = after - before
    if gain >= margin:
        return True, f"edit better by {gain:g}"
    return False, "tie" if gain == 0 else f"edit gains {gain:g} < margin {margin:g}"


def _batches(state: dict) -> list[tuple[str, Path]]:
    """(batch name, judged file) of the round, in order."""
    return [(Path(f).stem, Path(f)) for f in sorted(state["judged"])]


class RPO:
    name = "rpo"

    def __init__(self, config):
        self.config = config

    # --- the nodes ---------------------------------------------------------------------------

    def extra_nodes(self) -> Sequence[tuple[str, object]]:
        from atelier.graphs.nodes import loop_node  # the graph imports the strategies; not the other way at import time

        return (("critique", loop_node("critique")(self.critique)), ("write_edits", loop_node("write_edits")(self.write_edits)),
                ("edit", loop_node("edit")(self.edit)), ("pair", loop_node("pair")(self.pair)))

    def _rpo_dir(self, ctx, state) -> Path:
        return round_dir(ctx.run_dir, state["round"]) / "rpo"

    def critique(self, state: dict, ctx) -> dict:
        """The critic on each wrong, judged image (at most rpo.max_edits a round)."""
        out_dir, left = self._rpo_dir(ctx, state) / "critique", self.config.rpo.max_edits
        for name, judged in _batches(state):
            rows = [j for j in read_jsonl(judged) if not j.get("failed") and not j.get("ipr_correct")]
            if left is not None:  # the budget goes to the first batches, the same on every resume
                rows, left = rows[:left], left - len(rows[:left])
            out = out_dir / f"{name}.jsonl"
            if out.exists():
                continue
            set_status(ctx.run_dir, node=f"critique {name}", round=state["round"])
            results = backend_for(self.config.agents.critic, "critic").ask_many(
                [ctx.world.critique_request(r) for r in rows])
            write_jsonl_atomic(out, [{**_origin(r), "critique": res.record()} for r, res in zip(rows, results)])
        return {}

    def write_edits(self, state: dict, ctx) -> dict:
        """Edit instructions from each critique that found something wrong."""
        rpo_dir = self._rpo_dir(ctx, state)
        for name, _ in _batches(state):
            out = rpo_dir / "edits" / f"{name}.jsonl"
            if out.exists():
                continue
            rows = read_jsonl(rpo_dir / "critique" / f"{name}.jsonl")
            asks = [(i, r) for i, r in enumerate(rows)
                    if r["critique"]["ok"] and not r["critique"]["answer"]["matches_prompt"]]
            requests = [EditRequest(prompt=r["prompt"], critique=Critique.model_validate(r["critique"]["answer"]),
                                    image=Path(r["file"])) for _, r in asks]
            set_status(ctx.run_dir, node=f"write_edits {name}", round=state["round"])
            results = backend_for(self.config.agents.edit_writer, "edit_writer").ask_many(requests)
            answers = {i: res.record() for (i, _), res in zip(asks, results)}
            write_jsonl_atomic(out, [{**_origin(r), "edits": answers.get(i)} for i, r in enumerate(rows)])
        return {}

    def edit(self, state: dict, ctx) -> dict:
        """The world's editor on each image that got instructions; images and a manifest per batch."""
        rpo_dir, editor = self._rpo_dir(ctx, state), None
        for name, _ in _batches(state):
            out = rpo_dir / "edit" / name
            if (out / "manifest.jsonl").exists():
                continue
            editor = editor or ctx.world.editor()
            set_status(ctx.run_dir, node=f"edit {name}", round=state["round"])
            manifest = []
            with staged_dir(out) as tmp:
                for r in read_jsonl(rpo_dir / "edits" / f"{name}.jsonl"):
                    instructions = (r["edits"] or {}).get("answer", {}) or {}
                    instructions = instructions.get("instructions") or []
                    if not instructions:
                        continue
                    seed = edit_seed(self.config.seed, state["round"], r["seed"])
                    result = editor.edit(Image.open(r["file"]).convert("RGB"), r["prompt"], instructions, seed)
                    record = {**_origin(r), "instructions": instructions, "editor": editor.name, "edit": result.record()}
                    if any(o["applied"] for o in record["edit"]["outcomes"]):
                        result.image.save(tmp / Path(r["file"]).name)
                        record["edited_file"] = str(out / Path(r["file"]).name)
                    else:  # nothing it could carry out: a failed edit, no image
                        record["edited_file"] = None
                    manifest.append(record)
                write_jsonl_atomic(tmp / "manifest.jsonl", manifest)
        return {}

    def pair(self, state: dict, ctx) -> dict:
        """The judge on each edited image, the pair decision, the parquet export and the stories."""
        rpo_dir, margin = self._rpo_dir(ctx, state), self.config.rpo.margin
        prompts = [WorldPrompt.model_validate(p) for p in read_json(Path(state["prompts_file"]))]
        spec = TargetSpec.model_validate(state["spec"])
        for name, judged in _batches(state):
            out = rpo_dir / "pair" / f"{name}.jsonl"
            if out.exists():
                continue
            originals = {j["file"]: j for j in read_jsonl(judged)}
            edits = read_jsonl(rpo_dir / "edit" / name / "manifest.jsonl")
            done = [e for e in edits if e["edited_file"]]
            set_status(ctx.run_dir, node=f"pair {name}", round=state["round"])
            rows = [{"file": e["edited_file"], "prompt": e["prompt"], "prompt_index": e["prompt_index"], "seed": e["seed"],
                     "asked": prompts[e["prompt_index"]].asked.model_dump(mode="json"),
                     "target_class": prompts[e["prompt_index"]].target_class} for e in done]
            judged_edits = {j["file"]: j for j in (ctx.world.judge(rows, spec) if rows else [])}
            stories = []
            for e in edits:
                original, edited = originals[e["file"]], judged_edits.get(e["edited_file"])
                kept, why = pair_decision(original, edited, margin)
                stories.append({**e, "verdict_original": verdict(original),
                                "verdict_edited": verdict(edited) if edited else None, "kept": kept, "why": why})
            write_jsonl_atomic(out, stories)
        kept = [s for f in sorted((rpo_dir / "pair").glob("batch_*.jsonl")) for s in read_jsonl(f) if s["kept"]]
        write_dpo_parquet(rpo_dir / "pairs.parquet", [
            PreferencePair.from_images(s["prompt"], Image.open(s["edited_file"]), Image.open(s["file"])) for s in kept])
        write_jsonl_atomic(round_dir(ctx.run_dir, state["round"]) / "stories.jsonl", self._stories(state, rpo_dir))
        return {}

    @staticmethod
    def _stories(state: dict, rpo_dir: Path) -> list[dict]:
        """One line per judged sample of the round: what the critic, the writer, the editor and the
        judge made of it."""
        by_file: dict[str, dict] = {}
        for kind in ("critique", "edits"):
            for f in sorted((rpo_dir / kind).glob("batch_*.jsonl")):
                for r in read_jsonl(f):
                    by_file.setdefault(r["file"], {}).update({k: r[k] for k in (kind,) if k in r})
        for f in sorted((rpo_dir / "pair").glob("batch_*.jsonl")):
            for r in read_jsonl(f):
                by_file.setdefault(r["file"], {})["pair"] = r
        stories = []
        for _, judged in _batches(state):
            for j in read_jsonl(judged):
                seen = by_file.get(j["file"], {})
                pair = seen.get("pair", {})
                critique = (seen.get("critique") or {})
                edits = (seen.get("edits") or {})
                stories.append({
                    "prompt": j["prompt"], "image": j["file"], "judgment": verdict(j),
                    "critique": critique.get("answer") if critique else None,
                    "critic_error": critique.get("error") if critique else None,
                    "instructions": ((edits.get("answer") or {}).get("instructions")) if edits else None,
                    "edit_writer_error": edits.get("error") if edits else None,
                    "edited_image": pair.get("edited_file"), "edit": pair.get("edit"),
                    "verdict_edited": pair.get("verdict_edited"), "kept": pair.get("kept", False),
                    "why": pair.get("why") or ("right already" if j.get("ipr_correct") else
                                               "judgment failed" if j.get("failed") else "not edited"),
                })
        return stories

    # --- the Strategy seam ---------------------------------------------------------------------

    def curate(self, judgments: Sequence[dict], world: World, heldout: Sequence[WorldPrompt]) -> list[dict]:
        """The kept pairs' edited winners with their prompts (SFT rows; the DPO trainer reads the
        round's pairs.parquet beside them), after the right samples with theirs when rpo.keep_correct. Training prompts are never held-out ones (the world
        wrote them), and an edit keeps its prompt."""
        if not judgments:
            return []
        # The round folder from where its images were generated: round_NNN/generate/batch_XXX/pNNN_k.png.
        rpo_dir = Path(judgments[0]["file"]).parents[2] / "rpo"
        rows = []
        if self.config.rpo.keep_correct:  # as IPR: the right samples keep their prompts
            rows += [{"file": j["file"], "text": j["prompt"], "weight": self.config.train.correct_weight, "kind": "correct",
                      "prompt": j["prompt"]} for j in judgments if j.get("ipr_correct") and not j.get("failed")]
        for f in sorted((rpo_dir / "pair").glob("batch_*.jsonl")):
            for s in read_jsonl(f):
                if s["kept"]:
                    rows.append({"file": s["edited_file"], "text": s["prompt"], "weight": 1.0, "kind": "rpo_edited",
                                 "prompt": s["prompt"], "loser": s["file"], "instructions": s["instructions"],
                                 "editor": s["editor"], "why": s["why"]})
        return rows

    def train(self, world: World, datasets: Sequence[Path], out: Path, init_adapter: str | None, seed: int,
              progress: Progress | None = None, spec=None) -> dict:
        pairs = [Path(d).parent / "rpo" / "pairs.parquet" for d in datasets]
        match self.config.rpo.objective:
            case "dpo":
                return world.train_dpo(pairs, out, init_adapter, seed, progress)
            case "sft":
                return world.train_sft(datasets, out, init_adapter, seed, progress)
            case "both":
                sft_out = Path(out).parent / "adapter_sft"
                world.train_sft(datasets, sft_out, init_adapter, seed, progress)
                return world.train_dpo(pairs, out, str(sft_out), seed, progress)
        raise ValueError(f"rpo.objective {self.config.rpo.objective!r}")


def _origin(row: dict) -> dict:
    """Where a sample comes from: enough to find it again and to judge its edit."""
    return {k: row[k] for k in ("file", "prompt", "prompt_index", "seed") if k in row}


__all__ = ["RPO", "edit_seed", "editor_name", "pair_decision", "verdict"]
