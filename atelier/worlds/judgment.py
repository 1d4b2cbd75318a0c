"""One judgment record per image, for every world, and every metric computed from judgments alone.

A `Judgment` says what the prompt asked (objects with counts, a relation) and what the judge
found: detections with boxes and scores, per-object counts, the relation by VISOR's rule (box
centres, strict), the yes/no questions with their outcomes and CCSR score, rubric scores with
reasons, the CLIP score, and a failure record when a judge could not answer. A failed judgment
is left out of every metric and counted beside it (`n_failed`): a judge that could not answer
says nothing about the image. A judgment whose detector verdicts stand but whose model judge
failed keeps them, with `question_score` None and the failure recorded (`n_judge_failures`).

Metrics (Gokhale et al. 2022, VISOR; Tang et al. 2024, CCSR):
  object_accuracy          every asked object found at least once
  count_accuracy           every asked object found exactly as often as asked
  count_accuracy_multi     per object asked two or three times: found exactly that often
  colour/shape_accuracy    the shapes world's attributes (absent elsewhere)
  relation_accuracy_cond   VISOR_cond: relation right, among images with both objects found
  relation_accuracy_uncond VISOR_uncond: relation right, among relation prompts
  visor_n                  share of relation prompts with at least n images right
  ipr_accuracy             counts right and relation (if any) holds: IPR's "correct"
  question_score           mean CCSR score per image (+1 per positive yes, -1/+1 per negative yes/no)
  clip_score               mean CLIP score (torchmetrics: 100 x cosine, floored at 0)
Shares carry Wilson intervals, means Student's t; `paired_difference` serves every metric.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier.agents.questions import Answer, Outcome, YesNoQuestion, ccsr_score
from atelier.stats.intervals import mean, share
from atelier.stats.paired import paired_ratio_difference
from atelier.tools.detection import Detection, relation_holds

Relation = Literal["left of", "right of", "above", "below"]
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
VISOR_LEVELS = (1, 2, 3, 4)
SHARE_KEYS = ("object_accuracy", "count_accuracy", "count_accuracy_multi", "colour_accuracy", "shape_accuracy",
              "relation_accuracy_cond", "relation_accuracy_uncond", "ipr_accuracy")
MEAN_KEYS = ("question_score", "clip_score")
METRICS = SHARE_KEYS + MEAN_KEYS


class AskedObject(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="the object class as the detector is asked for it, e.g. 'dog', 'red circle'")
    count: int = Field(1, ge=1, description="how many the prompt asks for")


class Asked(BaseModel):
    """What a prompt asks for, in a form a detector can check."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    objects: tuple[AskedObject, ...] = Field(default=(), description="objects in prompt order")
    relation: Relation | None = Field(None, description="where the first object is relative to the second")


class GroupJudgment(BaseModel):
    """How one asked object was drawn. found = -1: present, in another number (a yes/no judge)."""

    name: str
    expected: int
    found: int
    colour_ok: bool | None = None  # the shapes world's attributes; None where not judged
    shape_ok: bool | None = None


class Judgment(BaseModel):
    """One image judged against its prompt; `model_dump()` is what the loop stores on disk."""

    prompt: str
    prompt_index: int
    relation: str | None
    found: dict[str, int]  # every detected label -> how many
    groups: list[GroupJudgment]
    object_ok: bool
    count_ok: bool
    colour_ok: bool | None = None
    shape_ok: bool | None = None
    relation_ok: bool | None  # None without a relation; False when an object is missing
    ipr_correct: bool  # counts right and, if there is a relation, it holds
    questions: list[dict] | None = None  # YesNoQuestion fields + 'outcome'
    question_score: int | None = None  # CCSR score of the outcomes
    rubric: dict | None = None
    clip_score: float | None = None
    failed: bool = False  # the judge gave no valid answer: left out of every metric
    failure: dict | None = None  # {role, error, raw}; set with failed, or alone when only the model judge failed


def judge_detections(asked: Asked, detections: Sequence[Detection], prompt: str, prompt_index: int = 0) -> Judgment:
    """The VISOR judgment of an image from its detections (labels = the names asked for)."""
    found = Counter(d.label for d in detections)
    groups = [GroupJudgment(name=o.name, expected=o.count, found=found[o.name]) for o in asked.objects]
    object_ok = all(g.found > 0 for g in groups)
    count_ok = all(g.found == g.expected for g in groups)
    relation_ok = None
    if asked.relation is not None:
        first, second = ([d for d in detections if d.label == o.name] for o in asked.objects[:2])
        relation_ok = object_ok and relation_holds(asked.relation, first, second)
    return Judgment(prompt=prompt, prompt_index=prompt_index, relation=asked.relation, found=dict(found), groups=groups,
                    object_ok=object_ok, count_ok=count_ok, relation_ok=relation_ok,
                    ipr_correct=count_ok and relation_ok is not False)


# --- yes/no questions in machine-checkable form ---------------------------------------------------


class Probe(BaseModel):
    """A question in a form the builtin judge checks against detections."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["exists", "count", "relation", "only_named"] = Field(description="what is checked")
    objects: tuple[str, ...] = Field(description="object names involved, e.g. ('red circle',)")
    count: int | None = Field(None, description="the exact count a 'count' probe asks for")
    relation: Relation | None = Field(None, description="the relation a 'relation' probe asks for")


def answer_probe(probe: Probe, detections: Sequence[Detection]) -> Answer:
    """The builtin judge's answer: the probe checked against detections."""
    found = Counter(d.label for d in detections)
    match probe.kind:
        case "exists":
            ok = found[probe.objects[0]] > 0
        case "count":
            ok = found[probe.objects[0]] == probe.count
        case "relation":
            first, second = ([d for d in detections if d.label == name] for name in probe.objects)
            ok = relation_holds(probe.relation, first, second)
        case "only_named":
            ok = any(label not in probe.objects for label in found)
    return "yes" if ok else "no"


def judgment_from_outcomes(asked: Asked, probes: Sequence[Probe | None], questions: Sequence[YesNoQuestion],
                           outcome: Mapping[int, Outcome], prompt: str, prompt_index: int) -> Judgment:
    """A judgment from a yes/no judge's outcomes. A group present but not in the asked number has
    found = -1: a yes/no judge says that the count is off, not what it is."""
    said = {(p.kind, p.objects): outcome.get(q.id, "skipped") for p, q in zip(probes, questions) if p is not None}
    groups = []
    for o in asked.objects:
        present = said.get(("exists", (o.name,))) == "yes"
        exact = present and said.get(("count", (o.name,))) == "yes"
        found = o.count if exact else (-1 if present else 0)
        groups.append(GroupJudgment(name=o.name, expected=o.count, found=found))
    object_ok = all(g.found != 0 for g in groups)
    count_ok = all(g.found == g.expected for g in groups)
    relation_ok = None
    if asked.relation is not None:
        a, b = (o.name for o in asked.objects[:2])
        relation_ok = object_ok and said.get(("relation", (a, b))) == "yes"
    return Judgment(
        prompt=prompt, prompt_index=prompt_index, relation=asked.relation,
        found={g.name: g.found for g in groups if g.found >= 0}, groups=groups, object_ok=object_ok,
        count_ok=count_ok, relation_ok=relation_ok, ipr_correct=count_ok and relation_ok is not False,
        questions=[{**q.model_dump(), "outcome": outcome.get(q.id, "skipped")} for q in questions],
        question_score=ccsr_score(questions, outcome),
    )


def failed_judgment(asked: Asked, prompt: str, prompt_index: int, role: str, error: str, raw: str | None) -> Judgment:
    """The record of an image no judge could answer for: kept, and left out of every metric."""
    groups = [GroupJudgment(name=o.name, expected=o.count, found=0) for o in asked.objects]
    return Judgment(prompt=prompt, prompt_index=prompt_index, relation=asked.relation, found={}, groups=groups,
                    object_ok=False, count_ok=False, relation_ok=None if asked.relation is None else False,
                    ipr_correct=False, failed=True, failure={"role": role, "error": error, "raw": raw})


# --- metrics --------------------------------------------------------------------------------------


def image_counts(j: Judgment) -> dict[str, tuple[float, float]]:
    """What one image adds to each metric, as (numerator, denominator): successes and trials for a
    share, value and 1 for a mean. The one definition that `summarize` and `paired_difference`
    both count with. A failed judgment adds nothing."""
    if j.failed:
        return {key: (0, 0) for key in METRICS}
    multi = [g for g in j.groups if 2 <= g.expected <= 3]
    related = j.relation is not None
    return {
        "object_accuracy": (int(j.object_ok), 1),
        "count_accuracy": (int(j.count_ok), 1),
        "count_accuracy_multi": (sum(g.found == g.expected for g in multi), len(multi)),
        "colour_accuracy": (0, 0) if j.colour_ok is None else (int(j.colour_ok), 1),
        "shape_accuracy": (0, 0) if j.shape_ok is None else (int(j.shape_ok), 1),
        "relation_accuracy_cond": (int(bool(j.relation_ok)), 1) if related and j.object_ok else (0, 0),
        "relation_accuracy_uncond": (int(bool(j.relation_ok)), 1) if related else (0, 0),
        "ipr_accuracy": (int(j.ipr_correct), 1),
        "question_score": (0, 0) if j.question_score is None else (j.question_score, 1),
        "clip_score": (0, 0) if j.clip_score is None else (j.clip_score, 1),
    }


def as_judgments(rows: Iterable[dict | Judgment]) -> list[Judgment]:
    return [r if isinstance(r, Judgment) else Judgment.model_validate(r) for r in rows]


def summarize(judgments: Iterable[dict | Judgment]) -> dict:
    """Metrics over judged images (prompts told apart by `prompt_index`): each key a dict
    {'value', 'ci95', 'n'}, plus n_images, n_failed (left out of every metric) and n_judge_failures
    (a model judge that gave no answer, whether or not a detector's verdicts stand)."""
    judgments = as_judgments(judgments)
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0])
    values: dict[str, list[float]] = defaultdict(list)
    for j in judgments:
        for key, (a, n) in image_counts(j).items():
            totals[key][0] += a
            totals[key][1] += n
            if key in MEAN_KEYS and n:
                values[key].append(a)
    right_per_prompt: dict[int, int] = defaultdict(int)
    for j in judgments:
        if j.relation is not None and not j.failed:
            right_per_prompt[j.prompt_index] += bool(j.relation_ok)
    metrics: dict = {"n_images": sum(not j.failed for j in judgments), "n_failed": sum(j.failed for j in judgments),
                     "n_judge_failures": sum(j.failure is not None for j in judgments)}
    for key in SHARE_KEYS:
        metrics[key] = share(int(totals[key][0]), int(totals[key][1]))
    for level in VISOR_LEVELS:
        metrics[f"visor_{level}"] = share(sum(k >= level for k in right_per_prompt.values()), len(right_per_prompt))
    for key in MEAN_KEYS:
        metrics[key] = mean(values[key])
    return metrics


def _per_prompt(rows: Sequence[Judgment], metric: str) -> dict[int, tuple[float, float]]:
    totals: dict[int, list[float]] = defaultdict(lambda: [0, 0])
    for j in rows:
        a, n = image_counts(j)[metric]
        totals[j.prompt_index][0] += a
        totals[j.prompt_index][1] += n
    return {i: (a, n) for i, (a, n) in totals.items()}


def paired_difference(new: Sequence[dict], old: Sequence[dict], metric: str) -> tuple[float, float]:
    """(new - old, its standard error) of `metric` over two evaluations' stored judgments
    (`judgments.jsonl` rows: prompt_index, seed and the Judgment fields), paired by prompt
    (atelier.stats.paired). An image whose judgment failed on either side is left out of both.
    ValueError when the two are not on the same (prompt_index, seed) pairs or there is nothing
    to count."""
    if metric not in METRICS:
        raise ValueError(f"no paired difference for metric {metric!r}")
    keys_new = sorted((r["prompt_index"], r["seed"]) for r in new)
    keys_old = sorted((r["prompt_index"], r["seed"]) for r in old)
    if keys_new != keys_old:
        raise ValueError("the two evaluations are not on the same prompts and seeds")
    failed = {(r["prompt_index"], r["seed"]) for r in (*new, *old) if r.get("failed")}
    keep = lambda rows: as_judgments(r for r in rows if (r["prompt_index"], r["seed"]) not in failed)  # noqa: E731
    return paired_ratio_difference(_per_prompt(keep(new), metric), _per_prompt(keep(old), metric))


def paired_win_rate(new: Sequence[dict], old: Sequence[dict], metric: str = "clip_score", tie_band: float = 0.01) -> dict | None:
    """CCSR's win rate of `new` over `old` on a per-image score (the CLIP score by default), image
    by image on the same (prompt_index, seed): a pair whose scores differ by at most `tie_band`
    is a tie (atelier.tools.clip_score.win_rate). {'wins', 'ties', 'losses', 'value' (wins /
    pairs), 'ci95' (Wilson), 'n'}; None when no image has the score on both sides. Images whose
    judgment failed on either side are left out."""
    from atelier.tools.clip_score import win_rate

    old_by_key = {(r["prompt_index"], r["seed"]): r for r in old}
    pairs = [(r[metric], o[metric]) for r in new if (o := old_by_key.get((r["prompt_index"], r["seed"])))
             and not r.get("failed") and not o.get("failed") and r.get(metric) is not None and o.get(metric) is not None]
    if not pairs:
        return None
    counted = win_rate([a for a, _ in pairs], [b for _, b in pairs], tie_band)
    return {"wins": counted.wins, "ties": counted.ties, "losses": counted.losses, **share(counted.wins, len(pairs))}
