from atelier.strategies.ipr import ipr_rows as _ipr_rows
from atelier.worlds.shapes.relabel import relabel, relabel_judgment
from atelier.worlds.shapes.metrics import judge_image
from atelier.worlds.shapes.scene import parse
from atelier.tools.detection import Detection


def det(label, cx, cy, r=3):
    return Detection(label=label, box=(cx - r, cy - r, cx + r, cy + r), score=1.0)


def ipr_rows(judgments, *args, **kwargs):
    return _ipr_rows(judgments, *args, relabel=relabel_judgment, **kwargs)


def judged(prompt, dets, file="x.png"):
    j = judge_image(parse(prompt), dets)
    return {"file": file, **j.model_dump(), "detections": [d.to_dict() for d in dets]}


def test_correct_sample_keeps_prompt_with_weight_one():
    rows = ipr_rows([judged("a red circle to the left of a blue triangle", [det("red circle", 5, 16), det("blue triangle", 25, 16)])],
                    relabel_weight=0.5, correct_weight=1.0, do_relabel=True)
    assert rows == [{"file": "x.png", "text": "a red circle to the left of a blue triangle", "weight": 1.0, "kind": "correct",
                     "prompt": "a red circle to the left of a blue triangle"}]


def test_wrong_relation_is_relabelled_with_the_actual_one():
    dets = [det("red circle", 25, 16), det("blue triangle", 5, 16)]
    j = judged("a red circle to the left of a blue triangle", dets)
    assert j["count_ok"] and j["relation_ok"] is False
    assert relabel(j["prompt"], dets, True, False) == "a red circle to the right of a blue triangle"
    # Same x: the prompt's axis cannot be told, the other axis can.
    dets = [det("red circle", 16, 5), det("blue triangle", 16, 25)]
    assert relabel("a red circle to the left of a blue triangle", dets, True, False) == "a red circle above a blue triangle"


def test_wrong_counts_describe_what_was_drawn():
    dets = [det("red circle", 5, 5), det("red circle", 5, 20), det("blue triangle", 25, 16)]
    j = judged("a red circle to the left of a blue triangle", dets)
    assert not j["count_ok"]
    assert relabel(j["prompt"], dets, False, j["relation_ok"]) == "two red circles and a blue triangle"
    # Missing object, extra unrelated object: both described, prompt objects first.
    dets = [det("blue triangle", 25, 16), det("green square", 5, 5)]
    assert relabel("a red circle to the left of a blue triangle", dets, False, False) == "a blue triangle and a green square"


def test_unsayable_or_heldout_relabels_are_dropped():
    assert relabel("a red circle", [], False, None) is None
    four = [det("red circle", 4 + 7 * i, 5) for i in range(4)]
    assert relabel("two red circles", four, False, None) is None
    # 'red circle' + 'blue square' is a held-out pair: never becomes training text.
    dets = [det("red circle", 5, 16), det("blue square", 25, 16)]
    assert relabel("a red circle", dets, False, None) is None


def test_ablation_keeps_original_prompt_at_lambda():
    dets = [det("red circle", 25, 16), det("blue triangle", 5, 16)]
    rows = ipr_rows([judged("a red circle to the left of a blue triangle", dets)], 0.5, 1.0, do_relabel=False)
    assert rows[0]["text"] == "a red circle to the left of a blue triangle" and rows[0]["weight"] == 0.5
    rows = ipr_rows([judged("a red circle to the left of a blue triangle", dets)], 0.25, 1.0, do_relabel=True)
    assert rows[0]["text"] == "a red circle to the right of a blue triangle" and rows[0]["weight"] == 0.25


def test_failed_judgments_are_not_trained_on():
    good = judged("a red circle to the left of a blue triangle", [det("red circle", 5, 16), det("blue triangle", 25, 16)])
    failed = {**good, "file": "y.png", "failed": True, "failure": {"role": "judge", "error": "HTTP 500", "raw": None}}
    assert [r["file"] for r in ipr_rows([good, failed], 0.5, 1.0, do_relabel=True)] == ["x.png"]
