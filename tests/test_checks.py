"""Checks defined once (engine/checks.py): the format and its refusals, the Task API preset, and the same checks as
GRPO's reward functions in a real RL run."""

import json

import pytest
import yaml

from engine import checks
from tests.test_stages import assert_complete, data_dir, shell, train, trainer  # noqa: F401  (fixtures)

WANT = '{"title": "Review Q4 budget", "priority": "high", "status": "pending"}'


def write(tmp_path, text: str):
    path = tmp_path / "checks.yaml"
    path.write_text(text)
    return path


def test_the_task_api_preset_counts_each_check():
    task = checks.load("task_api")
    assert all(task.score(WANT, WANT).values()) and task.reward(WANT, WANT) == 1.0
    assert task.score("Sure! Here it is: " + WANT, WANT)["valid JSON"] is False
    wrong = task.score('{"title": "review Q4 budget", "priority": "low", "status": "pending"}', WANT)
    assert wrong == {
        "valid JSON": True,
        "has title/priority/status": True,
        "priority right": False,
        "status right": True,
        "title exact": False,
    }
    assert (
        task.score('{"name": "Review Q4 budget", "priority": "high", "status": "pending"}', WANT)[
            "has title/priority/status"
        ]
        is False
    )
    assert task.summarize([WANT, "no"], [WANT, WANT])["valid JSON"] == 0.5
    assert task.reward('{"title": "review Q4 budget", "priority": "low", "status": "pending"}', WANT) == pytest.approx(
        3 / 5
    )


def test_every_kind_of_check(tmp_path):
    path = write(
        tmp_path,
        """
checks:
  - required_keys: [title]
  - schema: {type: object, properties: {priority: {enum: [low, medium, high]}}, required: [priority]}
  - regex: '^[{].*[}]$'
  - max_chars: 80
  - {min_chars: 10, weight: 3}
  - {equal: "", name: whole answer equals the reference}
""",
    )
    c = checks.load(path)
    assert [x.name for x in c.checks][-1] == "whole answer equals the reference"
    s = c.score('{"title": "x", "priority": "urgent"}', WANT)
    assert s == {
        "has the keys title": True,
        "matches the JSON schema": False,
        "matches ^[{].*[}]$": True,
        "at most 80 characters": True,
        "at least 10 characters": True,
        "whole answer equals the reference": False,
    }
    assert c.reward(WANT, WANT) == 1.0
    assert c.reward("short", "other") == pytest.approx(1 / 8)  # only max_chars (weight 1 of 8 in all) passes


@pytest.mark.parametrize(
    "text, says",
    [
        ("checks: [valid_jsn]", "unknown check 'valid_jsn'"),
        ("checks: [{keys: title}]", "keys needs a list"),
        ("checks: [{max_chars: many}]", "max_chars needs a whole number"),
        ("checks: [{valid_json: 1}]", "takes no argument"),
        ("checks: [{regex: '('}]", "does not compile"),
        ("checks: [{schema: {type: 5}}]", "JSON schema is not valid"),
        ("checks: [{equal: a, regex: b}]", "one check per entry"),
        ("checks: [{equal: a, weight: -1}]", "weight must be a number of 0 or more"),
        ("checks: [valid_json, valid_json]", "names two checks the same"),
        ("checks: []", "has no list of checks"),
        ("checks: [valid_json", "is not valid YAML"),
    ],
)
def test_a_check_file_that_cannot_be_used_gets_a_sentence(tmp_path, text, says):
    with pytest.raises(checks.CheckError, match=says.replace("(", r"\(").replace("[", r"\[")):
        checks.load(write(tmp_path, text))


def test_a_missing_check_file_names_the_presets(tmp_path):
    with pytest.raises(checks.CheckError, match="does not exist.*task_api"):
        checks.load(tmp_path / "nope.yaml")


def test_a_check_that_raises_scores_that_answer_zero_and_says_why(tmp_path, capsys):
    c = checks.load(write(tmp_path, "checks: [valid_json, {schema: {$ref: 'https://example.invalid/s.json'}}]"))
    assert c.score(WANT, WANT) == {"valid JSON": True, "matches the JSON schema": False}
    assert "raised" in capsys.readouterr().err
    reward = c.reward_funcs()[1]
    assert reward(prompts=["p"], completions=[[{"role": "assistant", "content": WANT}]], expected=[WANT]) == [0.0]


def test_reward_functions_read_conversational_completions_and_the_expected_column():
    funcs = checks.load("task_api").reward_funcs()
    assert [f.__name__ for f in funcs] == [
        "valid_JSON",
        "has_title_priority_status",
        "priority_right",
        "status_right",
        "title_exact",
    ]
    assert sum(f.weight for f in funcs) == pytest.approx(1.0)
    wrong = '{"title": "Review Q4 budget", "priority": "low", "status": "pending"}'
    answers = [[{"role": "assistant", "content": WANT}], [{"role": "assistant", "content": wrong}]]
    got = {f.__name__: f(prompts=["a", "b"], completions=answers, expected=[WANT, WANT]) for f in funcs}
    assert got["priority_right"] == [1.0, 0.0] and got["valid_JSON"] == [1.0, 1.0]


def test_rl_rewarded_by_checks_trains_and_logs_each_check(tmp_path, trainer, tiny_model, data_dir):  # noqa: F811
    run = tmp_path / "rl"
    result = train(trainer, run, "rl", "lora", tiny_model, data_dir, "--reward", "task_api")
    steps = assert_complete(run, result, "rl", "lora")
    assert {"rewards/valid_JSON/mean", "rewards/title_exact/mean"} <= set(steps[-1])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["extra"]["reward_checks"] == "task_api"
    assert not (run / "reward_model").exists()
    assert "rewards: the checks of task_api" in (run / "train.log").read_text()


def test_rl_with_a_broken_check_file_fails_with_its_sentence(tmp_path, tiny_model, data_dir):  # noqa: F811
    run = tmp_path / "rl"
    result = train(shell, run, "rl", "lora", tiny_model, data_dir, "--reward", str(write(tmp_path, "checks: [x]")))
    assert result.returncode == 2 and "unknown check 'x'" in result.stderr and "Traceback" not in result.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "unknown check 'x'" in status["error"]
