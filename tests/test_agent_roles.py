"""The agents' schemas, prompts and builtin rules: CCSR scoring, the shapes world's questions,
critic, edit-instruction writer, rubric and match judges, prompt writer modes, per-role config."""

import re

import pytest
from pydantic import ValidationError

from atelier.agents.backend import AgentRequest
from atelier.agents.builtin_backend import BuiltinBackend
from atelier.agents.critic import Critique, CritiqueRequest
from atelier.agents.edit_writer import EditInstructions, EditRequest
from atelier.agents.judge import PairRubric, QuestionsJudgeRequest, Rubric, YesNoAnswers
from atelier.agents.planner import TargetSpec
from atelier.agents.prompt_writer import Rewrites, WrittenPrompts
from atelier.agents.questions import YesNoQuestion, ccsr_outcomes, ccsr_score
from atelier.agents.templates import render
from atelier.config import ConfigError, load_config
from atelier.worlds.shapes.critique import critique_request
from atelier.worlds.shapes.heldout import is_heldout
from atelier.worlds.shapes.judge import match_request, pair_rubric_request, questions_request, rubric_request
from atelier.worlds.shapes.metrics import Judgment
from atelier.worlds.shapes.plan import ShapesPlanRequest, plan_builtin
from atelier.worlds.shapes.prompts import (ShapesHeldoutPromptsRequest, ShapesRewriteRequest, ShapesWritePromptsRequest,
                                           equivalent_captions)
from atelier.worlds.shapes.questions import judgment_fields, shapes_questions
from atelier.worlds.shapes.render import render as render_scene
from atelier.worlds.shapes.scene import parse

PROMPT = "a red circle to the left of two blue squares"
EXAMPLE = "examples/shapes.yaml"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    good, bad = tmp / "good.png", tmp / "bad.png"
    render_scene(parse(PROMPT), seed=1).save(good)
    render_scene(parse("a blue square to the left of a red circle"), seed=2).save(bad)
    return good, bad


def all_requests(good, spec) -> list[AgentRequest]:
    critique = Critique(matches_prompt=True, deviations=[], poorly_rendered=[], artifacts=[], summary="fine")
    return [
        ShapesPlanRequest(goal="get left and right right"),
        ShapesWritePromptsRequest(spec=spec, n=4, target_class="red circle"),
        ShapesHeldoutPromptsRequest(spec=spec, n=4),
        ShapesRewriteRequest(prompt=PROMPT, n=2),
        questions_request(good, PROMPT),
        rubric_request(good, PROMPT),
        pair_rubric_request(good, good, PROMPT),
        match_request(good, PROMPT),
        critique_request(good, PROMPT),
        EditRequest(prompt=PROMPT, critique=critique, image=good),
    ]


# --- schemas and templates --------------------------------------------------------------------


def _objects(schema: dict):
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            yield schema
        for value in schema.values():
            yield from _objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _objects(value)


def test_every_answer_schema_is_closed_and_described(images):
    for request in all_requests(images[0], plan_builtin("left and right")):
        schema = request.answer_schema.model_json_schema()
        for obj in _objects(schema):
            assert obj.get("additionalProperties") is False, (request.template, obj.get("title"))
            for name, prop in obj["properties"].items():
                assert prop.get("description"), f"{request.answer_schema.__name__}.{name} has no description"


def test_one_template_per_role_and_mode_renders_completely(images):
    names = set()
    for request in all_requests(images[0], plan_builtin("left and right")):
        system, user = render(request.template, request.template_values())
        names.add(request.template)
        assert system and user and "$" not in system + user, request.template
    assert names == {"planner", "prompt_writer_train", "prompt_writer_heldout", "prompt_writer_rewrite", "judge_questions",
                     "judge_rubric", "judge_rubric_pair", "judge_match", "critic", "edit_writer"}


def test_the_builtin_backend_answers_every_request(images):
    backend = BuiltinBackend()
    for request in all_requests(images[0], plan_builtin("left and right")):
        result = backend.ask(request)
        assert result.ok, (request.template, result.error)
        assert isinstance(result.answer, request.answer_schema)


# --- CCSR scoring -----------------------------------------------------------------------------


def q(i, positive=True, depends_on=()):
    return YesNoQuestion(id=i, text=f"question {i}?", positive=positive, depends_on=list(depends_on))


def test_ccsr_scores_positive_and_negative_questions():
    questions = [q(1), q(2), q(3, positive=False), q(4, positive=False)]
    outcome = ccsr_outcomes(questions, {1: "yes", 2: "no", 3: "yes", 4: "no"})
    assert ccsr_score(questions, outcome) == 1 + 0 - 1 + 1


def test_questions_after_a_no_are_skipped_not_guessed():
    questions = [q(1), q(2, depends_on=[1]), q(3, depends_on=[2]), q(4), q(5, positive=False, depends_on=[4])]
    outcome = ccsr_outcomes(questions, {1: "no", 2: "yes", 3: "yes", 4: "yes", 5: "no"})
    assert outcome == {1: "no", 2: "skipped", 3: "skipped", 4: "yes", 5: "no"}
    assert ccsr_score(questions, outcome) == 2


def test_question_lists_must_depend_on_earlier_questions():
    with pytest.raises(ValidationError, match="not earlier"):
        TargetSpec(metric="object_accuracy", questions=[q(1, depends_on=[2]), q(2)])


def test_target_spec_is_world_agnostic_but_names_a_known_metric():
    spec = TargetSpec(objects=["dog", "giraffe"], relations=["left of"], counts=[5], metric="relation_accuracy_cond")
    assert spec.colours == [] and spec.shapes == []  # [] = the world's all
    with pytest.raises(ValidationError, match="unknown metric"):
        TargetSpec(metric="fid")
    with pytest.raises(ValidationError, match="needs at least one relation"):
        TargetSpec(metric="relation_accuracy_cond")


@pytest.mark.parametrize("fields, message", [
    (dict(objects=["dog"]), "not '<colour> <shape>'"),
    (dict(colours=["purple"]), "colours"),
    (dict(shapes=["hexagon"]), "shapes"),
    (dict(counts=[5]), "at most 3"),
    (dict(metric="clip_score"), "does not measure a shapes goal"),
    (dict(relations=["left of"], colours=["red"], shapes=["circle"], metric="relation_accuracy_cond"), "two different objects"),
])
def test_the_shapes_planner_checks_the_spec_against_its_vocabulary(fields, message):
    answer = TargetSpec(**({"metric": "object_accuracy"} | fields))
    with pytest.raises(ValueError, match=message):
        ShapesPlanRequest(goal="anything").check(answer)
    ShapesPlanRequest(goal="anything").check(plan_builtin("left and right"))


def test_the_builtin_judge_and_critic_answer_from_what_the_request_carries(tmp_path):
    """No detector inside the agents: the request's detections and Asked are all they read."""
    from atelier.agents.critic import critique_builtin
    from atelier.agents.judge import MatchJudgeRequest, RubricJudgeRequest
    from atelier.worlds.judgment import Asked, AskedObject, Probe

    asked = Asked(objects=(AskedObject(name="dog"), AskedObject(name="cat", count=2)), relation="left of")
    found = ({"label": "dog", "box": (0, 0, 10, 10), "score": 0.9}, {"label": "cat", "box": (20, 0, 30, 10), "score": 0.9},
             {"label": "bird", "box": (40, 0, 50, 10), "score": 0.3})
    nowhere = tmp_path / "never_written.png"
    questions = (YesNoQuestion(id=1, text="Is there a dog?", positive=True, depends_on=[]),
                 YesNoQuestion(id=2, text="Are there two cats?", positive=True, depends_on=[]),
                 YesNoQuestion(id=3, text="Is the dog left of the cat?", positive=True, depends_on=[]))
    probes = (Probe(kind="exists", objects=("dog",)), Probe(kind="count", objects=("cat",), count=2),
              Probe(kind="relation", objects=("dog", "cat"), relation="left of"))
    request = QuestionsJudgeRequest(image=nowhere, prompt="a dog left of two cats", questions=questions, probes=probes, detections=found)
    assert [a.answer for a in BuiltinBackend().ask(request).answer.answers] == ["yes", "no", "yes"]
    match = BuiltinBackend().ask(MatchJudgeRequest(image=nowhere, prompt="p", asked=asked, detections=found)).answer
    assert not match.matches and match.reason == "wrong counts"
    rubric = BuiltinBackend().ask(RubricJudgeRequest(image=nowhere, prompt="p", asked=asked, detections=found)).answer
    assert rubric.alignment.reason == "4 of 5 checks hold; unasked shapes"
    critique = BuiltinBackend().ask(CritiqueRequest(image=nowhere, prompt="p", asked=asked, detections=found)).answer
    assert [d.kind for d in critique.deviations] == ["count", "extra"] and critique.poorly_rendered == ["2 cat"]
    assert critique.artifacts == ["the bird is faint or misshapen"]
    assert critique_builtin(asked, [], ["one dog", "two cats"]).poorly_rendered == ["one dog", "two cats"]
    with pytest.raises(ValueError, match="needs what the prompt asks"):
        CritiqueRequest(image=nowhere, prompt="p").answer_builtin()


# --- the shapes world's questions -------------------------------------------------------------


def test_shapes_questions_follow_the_prompt():
    questions, probes = shapes_questions(parse(PROMPT))
    texts = [x.text for x in questions]
    assert texts[:5] == ["Is there a red circle?", "Is there exactly one red circle?", "Is there a blue square?",
                         "Are there exactly two blue squares?", "Is the red circle to the left of the blue squares?"]
    assert questions[4].depends_on == [1, 3] and questions[1].depends_on == [1]
    assert not questions[-1].positive and [p.kind for p in probes][-1] == "only_named"


@pytest.mark.parametrize("answers, expect", [
    ({1: "yes", 2: "yes", 3: "yes", 4: "yes", 5: "yes", 6: "no"}, dict(object_ok=True, count_ok=True, relation_ok=True, ipr_correct=True)),
    ({1: "yes", 2: "yes", 3: "yes", 4: "yes", 5: "no", 6: "no"}, dict(object_ok=True, count_ok=True, relation_ok=False, ipr_correct=False)),
    ({1: "yes", 2: "yes", 3: "yes", 4: "no", 5: "yes", 6: "no"}, dict(object_ok=True, count_ok=False, relation_ok=True, ipr_correct=False)),
    # No red circle: its count and the relation are skipped, and count as wrong.
    ({1: "no", 2: "yes", 3: "yes", 4: "yes", 5: "yes", 6: "no"}, dict(object_ok=False, count_ok=False, relation_ok=False, ipr_correct=False)),
])
def test_answers_map_onto_the_loops_judgment_fields(answers, expect):
    scene = parse(PROMPT)
    questions, probes = shapes_questions(scene)
    fields = judgment_fields(scene, probes, questions, ccsr_outcomes(questions, answers), prompt_index=3)
    Judgment.model_validate(fields)
    assert {k: fields[k] for k in expect} == expect and fields["prompt_index"] == 3


def test_no_answer_counts_as_wrong():
    scene = parse("two green triangles")
    questions, probes = shapes_questions(scene)
    fields = judgment_fields(scene, probes, questions, None, prompt_index=0)
    assert not fields["object_ok"] and not fields["ipr_correct"] and fields["relation_ok"] is None


def test_builtin_question_judge_agrees_with_the_detector(images):
    good, bad = images
    for image, right in ((good, True), (bad, False)):
        request = questions_request(image, PROMPT)
        questions, probes = request.questions, request.probes
        answers = BuiltinBackend().ask(request).answer
        fields = judgment_fields(parse(PROMPT), probes, questions, ccsr_outcomes(questions, {a.id: a.answer for a in answers.answers}), 0)
        assert fields["ipr_correct"] is right


def test_question_answers_must_cover_every_question_once(images):
    questions, probes = shapes_questions(parse(PROMPT))
    request = QuestionsJudgeRequest(image=images[0], prompt=PROMPT, questions=questions, probes=probes)
    for answers, message in (([1, 2, 3], "have no answer"), ([1, 1, 2, 3, 4, 5, 6], "exactly once"), ([1, 2, 3, 4, 5, 6, 9], "no questions")):
        with pytest.raises(ValueError, match=message):
            request.check(YesNoAnswers.model_validate({"answers": [{"id": i, "answer": "yes"} for i in answers]}))


# --- critic, edit instructions, rubric, match -------------------------------------------------


def test_builtin_critic_and_edit_writer_on_a_wrong_image(images):
    _, bad = images
    critique = BuiltinBackend().ask(critique_request(bad, PROMPT)).answer
    assert not critique.matches_prompt
    assert {d.kind for d in critique.deviations} == {"count", "relation"}
    assert "two blue squares" in critique.poorly_rendered
    edits = BuiltinBackend().ask(EditRequest(prompt=PROMPT, critique=critique, image=bad)).answer
    assert 1 <= len(edits.instructions) <= 3
    assert all(len(i.split()) <= 8 and "prompt" not in i for i in edits.instructions)
    assert "Draw exactly two blue squares" in edits.instructions


def test_edit_instructions_are_at_most_three_of_at_most_eight_words():
    EditInstructions(instructions=["Add a red circle", "Move the blue square to the right"], rationale="r")
    with pytest.raises(ValidationError):
        EditInstructions(instructions=["Move the red circle a little further to the left please"], rationale="r")
    with pytest.raises(ValidationError):
        EditInstructions(instructions=["Add one", "Add two", "Add three", "Add four"], rationale="r")
    schema = EditInstructions.model_json_schema()["properties"]["instructions"]
    assert schema["maxItems"] == 3 and "pattern" in schema["items"]  # constrained decoding sees the limits too
    request = EditRequest(prompt=PROMPT, critique=Critique(matches_prompt=True, deviations=[], poorly_rendered=[], artifacts=[], summary="ok"))
    with pytest.raises(ValueError, match="not the prompt"):
        request.check(EditInstructions(instructions=["Change the prompt wording"], rationale="r"))


def test_critique_must_agree_with_itself(images):
    request = CritiqueRequest(image=images[0], prompt=PROMPT)
    with pytest.raises(ValueError, match="no deviation"):
        request.check(Critique(matches_prompt=False, deviations=[], poorly_rendered=[], artifacts=[], summary="bad"))


def test_rubrics_and_match_prefer_the_right_image(images):
    good, bad = images
    backend = BuiltinBackend()
    rubric_good = backend.ask(rubric_request(good, PROMPT)).answer
    rubric_bad = backend.ask(rubric_request(bad, PROMPT)).answer
    assert isinstance(rubric_good, Rubric) and rubric_good.alignment.score == 5 > rubric_bad.alignment.score
    assert all(0 <= s.score <= 5 and s.reason for s in (rubric_bad.aesthetics, rubric_bad.alignment, rubric_bad.preference))
    pair = backend.ask(pair_rubric_request(bad, good, PROMPT)).answer
    assert isinstance(pair, PairRubric) and pair.preferred == "second"
    assert backend.ask(match_request(good, PROMPT)).answer.matches
    assert not backend.ask(match_request(bad, PROMPT)).answer.matches
    with pytest.raises(ValueError, match="lower preference"):
        pair_rubric_request(bad, good, PROMPT).check(pair.model_copy(update={"preferred": "first"}))


# --- prompt writer ----------------------------------------------------------------------------


def test_class_conditioned_prompts_show_the_class_and_never_a_heldout_pair():
    spec = plan_builtin("left and right")
    answer = BuiltinBackend().ask(ShapesWritePromptsRequest(spec=spec, n=12, target_class="yellow triangle")).answer
    scenes = [parse(p.text) for p in answer.prompts]
    assert len(scenes) == 12 and all("yellow triangle" in {g.name for g in s.groups} for s in scenes)
    assert all(s.relation in ("left of", "right of") and not is_heldout(s) for s in scenes)


def test_prompt_writer_rejects_what_the_world_cannot_train_on():
    spec = plan_builtin("left and right")
    request = ShapesWritePromptsRequest(spec=spec, n=2, target_class="red circle")
    bad = [("a red circle to the left of a purple hexagon", "unknown"), ("a red circle to the left of a blue square", "held-out"),
           ("a red circle to the left of a green square", "repeats")]
    for text, message in bad:
        answer = WrittenPrompts.model_validate({"prompts": [
            {"text": "a red circle to the left of a green square", "target_class": "red circle", "objects": [], "relation": None, "attributes": []},
            {"text": text, "target_class": "red circle", "objects": [], "relation": None, "attributes": []}]})
        with pytest.raises(ValueError, match=message):
            request.check(answer)


def test_heldout_mode_uses_heldout_pairs_only():
    spec = plan_builtin("above and below")
    answer = BuiltinBackend().ask(ShapesHeldoutPromptsRequest(spec=spec, n=6)).answer
    assert len(answer.prompts) == 6 and all(is_heldout(parse(p.text)) for p in answer.prompts)


def test_rewrites_keep_the_meaning():
    rewrites = equivalent_captions(parse("a red circle to the left of two blue squares"))
    assert rewrites[0] == "two blue squares to the right of a red circle"
    request = ShapesRewriteRequest(prompt="a red circle to the left of two blue squares", n=1)
    with pytest.raises(ValueError, match="changes the meaning"):
        request.check(Rewrites(rewrites=["two blue squares to the left of a red circle"]))


# --- per-role config --------------------------------------------------------------------------


def test_example_config_keeps_builtin_agents():
    cfg = load_config(EXAMPLE)
    assert all(a.backend == "builtin" for a in cfg.agents.roles().values())
    assert set(cfg.agents.roles()) == {"planner", "prompt_writer", "judge", "critic", "edit_writer"}


@pytest.mark.parametrize("overrides, message", [
    (["agents.judge.backend=openai"], r"^agents\.judge: .*needs base_url and model"),
    (["agents.critic.backend=openai", "agents.critic.base_url=http://127.0.0.1:1/v1"], r"^agents\.critic: .*needs model"),
    (["agents.judge.api_key_env=sk-live-123"], r"^agents\.judge\.api_key_env: .*environment variable"),
    (["agents.judge.backend=openai", "agents.judge.base_url=http://h/v1", "agents.judge.model=m", "agents.critic.backend=openai",
      "agents.critic.base_url=http://h/v1/", "agents.critic.model=m", "agents.critic.max_concurrency=2"], "share http://h/v1"),
    (["agents.judge.max_concurrency=0"], r"^agents\.judge\.max_concurrency"),
])
def test_bad_agent_configs_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(EXAMPLE, overrides)
    assert re.search(message, str(e.value)) and "\n" not in str(e.value)
    assert "sk-live-123" not in str(e.value)


@pytest.mark.parametrize("key", ["hf_AbCdEfGhIjKlMnOpQrStUvWx0123", "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                                 "gsk_0123456789abcdefABCDEF", "AbCdEf0123456789GhIjKl"])
def test_a_key_pasted_as_a_variable_name_is_refused_without_repeating_it(key, monkeypatch, capsys):
    with pytest.raises(ConfigError) as e:
        load_config(EXAMPLE, [f"agents.judge.api_key_env={key}"])
    assert "looks like an API key" in str(e.value) and key not in str(e.value)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "judge_key", "ATELIER_TEST_KEY", "VLLM_API_KEY_2"])
def test_ordinary_variable_names_pass(name):
    assert load_config(EXAMPLE, [f"agents.judge.api_key_env={name}"]).agents.judge.api_key_env == name


def test_two_roles_may_name_two_servers():
    cfg = load_config(EXAMPLE, ["agents.planner.backend=openai", "agents.planner.base_url=http://a:1/v1", "agents.planner.model=llm",
                                "agents.judge.backend=openai", "agents.judge.base_url=http://b:2/v1", "agents.judge.model=vlm",
                                "agents.judge.api_key_env=JUDGE_KEY"])
    assert cfg.agents.planner.base_url != cfg.agents.judge.base_url and cfg.agents.judge.api_key_env == "JUDGE_KEY"
