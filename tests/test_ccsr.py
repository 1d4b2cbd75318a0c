"""CCSR's rule: yes/no questions scored per candidate, the best of N per prompt kept, then filtered
by the detector's confidence for the target class."""

import pytest

from atelier.agents.questions import YesNoQuestion, ccsr_outcomes, ccsr_score
from atelier.strategies.ccsr import best_of_n, target_confidence

QUESTIONS = [
    YesNoQuestion(id=1, text="Is there an elephant?", positive=True, depends_on=[]),
    YesNoQuestion(id=2, text="Does the elephant look like a real photograph?", positive=True, depends_on=[1]),
    YesNoQuestion(id=3, text="Is the elephant deformed?", positive=False, depends_on=[1]),
    YesNoQuestion(id=4, text="Is there text or a watermark?", positive=False, depends_on=[]),
]


@pytest.mark.parametrize("answers, outcome, score", [
    # every question as hoped: +1 +1 +1 (no to a negative) +1
    ({1: "yes", 2: "yes", 3: "no", 4: "no"}, {1: "yes", 2: "yes", 3: "no", 4: "no"}, 4),
    # a negative question answered "yes" costs a point
    ({1: "yes", 2: "yes", 3: "yes", 4: "no"}, {1: "yes", 2: "yes", 3: "yes", 4: "no"}, 2),
    # no elephant: the questions that depend on it are skipped (0), never guessed, whatever was said
    ({1: "no", 2: "yes", 3: "no", 4: "yes"}, {1: "no", 2: "skipped", 3: "skipped", 4: "yes"}, -1),
    # an unanswered question is skipped too
    ({1: "yes", 3: "no", 4: "no"}, {1: "yes", 2: "skipped", 3: "no", 4: "no"}, 3),
])
def test_ccsr_score_table(answers, outcome, score):
    assert ccsr_outcomes(QUESTIONS, answers) == outcome
    assert ccsr_score(QUESTIONS, outcome) == score


def _judged(prompt_index, k, score, confidence, target="elephant", failed=False):
    return {"file": f"p{prompt_index}_{k}.png", "prompt": f"a photo of an {target}", "prompt_index": prompt_index,
            "target_class": target, "groups": [{"name": target, "expected": 1, "found": 1}],
            "detections": [{"label": target, "box": [0, 0, 8, 8], "score": confidence},
                           {"label": "giraffe", "box": [0, 0, 8, 8], "score": 0.99}],
            "question_score": score, "failed": failed}


def test_best_of_n_keeps_the_highest_score_then_filters_by_confidence():
    judgments = [
        _judged(0, 0, 2, 0.9), _judged(0, 1, 4, 0.7), _judged(0, 2, 4, 0.8),  # tie on 4: higher confidence wins
        _judged(1, 0, 4, 0.3), _judged(1, 1, 1, 0.95),  # the best scores 4 but the detector is unsure: nothing kept
        _judged(2, 0, 3, 0.6, failed=True), _judged(2, 1, 0, 0.6),  # a failed judgment never competes
    ]
    kept = best_of_n(judgments, threshold=0.5)
    assert [(j["file"], j["ccsr_score"]) for j in kept] == [("p0_2.png", 4), ("p2_1.png", 0)]
    assert kept[0]["confidence"] == pytest.approx(0.8)
    assert best_of_n(judgments, threshold=0.25)[1]["file"] == "p1_0.png"


def test_target_confidence_is_the_least_sure_target():
    # Without a target class every asked object is a target; the detection of another class does not count.
    j = {"groups": [{"name": "dog"}, {"name": "cat"}],
         "detections": [{"label": "dog", "score": 0.9}, {"label": "dog", "score": 0.4}, {"label": "cat", "score": 0.6},
                        {"label": "car", "score": 1.0}]}
    assert target_confidence(j) == pytest.approx(0.6)
    assert target_confidence({**j, "detections": [{"label": "dog", "score": 0.9}]}) == 0.0


def test_win_rate_pairs_images_and_ties_within_the_band():
    from atelier.worlds.judgment import paired_win_rate

    def rows(scores, failed=()):
        return [{"prompt_index": i // 2, "seed": i, "clip_score": s, "failed": i in failed} for i, s in enumerate(scores)]

    new, old = rows([30.0, 25.005, 20.0, 31.0, None]), rows([29.0, 25.0, 21.0, 10.0, 5.0], failed={3})
    won = paired_win_rate(list(reversed(new)), old)  # paired by (prompt, seed), not by order
    assert (won["wins"], won["ties"], won["losses"], won["n"]) == (1, 1, 1, 3)  # a failed and a missing score left out
    assert won["value"] == pytest.approx(1 / 3) and won["ci95"][0] < 1 / 3 < won["ci95"][1]
    assert paired_win_rate(rows([None]), rows([1.0])) is None
