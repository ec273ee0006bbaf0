"""The lesson's decision tree: its own scenarios must give its own answers (shared/seeds/000_*.txt)."""

import json
import subprocess
import sys

import pytest

from engine.hardware import preset_hardware, this_computer
from engine.paths import REPO
from engine.recommend import (
    PERMISSIVE,
    STAGE_ORDER,
    RecommendError,
    advise_method,
    base_models,
    compare_dataset,
    goal_keys,
    lesson,
    recommend,
)
from engine.spec import METHODS, STAGES


def test_task_api_assistant_on_a_consumer_gpu_is_qlora_sft_with_2000_to_5000_examples():
    # Lesson, "The Task API Example": domain expertise + consistent JSON on a consumer GPU
    rec = recommend(["capability", "quality"], preset_hardware("rtx-3060"))
    assert rec.pipeline == ["sft"]
    assert rec.peft == "qlora"
    assert (rec.data.stage, rec.data.min_examples, rec.data.max_examples) == ("sft", 2000, 5000)
    assert not rec.consider_rag


def test_customer_support_chatbot_of_try_with_ai_prompt_1():
    # docs -> SFT + consider RAG; style guide -> SFT (or DPO); avoid promising features -> DPO
    rec = recommend(["knowledge", "style", "safety"], preset_hardware("rtx-4090"))
    advice = {a.goal: a for a in rec.per_goal}
    assert advice["knowledge"].primary == "SFT" and advice["knowledge"].secondary == "RAG"
    assert (advice["style"].primary, advice["style"].secondary) == ("SFT", "DPO")
    assert advice["safety"].primary == "DPO"
    assert rec.pipeline == ["sft", "dpo"]
    assert rec.consider_rag
    assert any("RAG" in c for c in rec.caveats)
    # "avoid promising features" read as behaviour refinement gives DPO as well
    assert recommend(["refinement"]).pipeline == ["dpo"]


def test_safety_starts_with_dpo_and_offers_rlhf_when_dpo_proves_insufficient():
    rec = recommend(["safety"], preset_hardware("a100-80"))
    assert rec.pipeline == ["dpo"]
    assert rec.alternatives[0]["pipeline"] == ["rm", "rl"]
    assert "insufficient" in rec.alternatives[0]["when"]
    with_sft = recommend(["capability", "safety"])
    assert with_sft.pipeline == ["sft", "dpo"]
    assert with_sft.alternatives[0]["pipeline"] == ["sft", "rm", "rl"]
    assert recommend(["refinement"]).alternatives == []


def test_pretraining_only_for_a_new_language_and_with_its_caveat():
    for goal in goal_keys():
        if goal != "new-language":
            assert "pt" not in recommend([goal]).pipeline
    rec = recommend(["new-language"])
    assert rec.pipeline == ["pt", "sft"]
    assert any("almost never" in c for c in rec.caveats)


def test_every_combination_gives_valid_stages_in_order_and_a_valid_method():
    for goal in goal_keys():
        for other in goal_keys():
            rec = recommend([goal, other], preset_hardware("l4"))
            assert rec.pipeline == [s for s in STAGE_ORDER if s in rec.pipeline]
            assert set(rec.pipeline) <= set(STAGES) and rec.peft in METHODS
            assert rec.reasons and all(r.endswith(".") for r in rec.reasons)
            assert len(rec.data_by_stage) == len(rec.pipeline)
            assert any("7B" in c and "70B" in c for c in rec.caveats)  # "more parameters is not better"


def test_forgetting_caveat_names_lora_as_the_mitigation():
    rec = recommend(["capability"], preset_hardware("rtx-3060"))
    assert any("forgetting" in c and "LoRA" in c for c in rec.caveats)


@pytest.mark.parametrize(
    "preset, peft, tier",
    [
        ("rtx-3060", "qlora", "consumer"),
        ("t4", "qlora", "consumer"),
        ("rtx-4090", "lora", "professional"),
        ("l4", "lora", "professional"),
        ("a100-40", "lora", "professional"),
        ("a100-80", "lora", "cloud"),
        ("h100", "lora", "cloud"),
        ("h200", "lora", "cloud"),
        ("apple-m-64", "lora", "apple"),
        ("cpu", "lora", "cpu"),
    ],
)
def test_hardware_branch_of_the_decision_tree(preset, peft, tier):
    advice = advise_method(preset_hardware(preset))
    assert (advice.peft, advice.tier) == (peft, tier)
    assert advice.reasons


def test_seed_exercise_three_machines_largest_model_and_method():
    # "Option A RTX 4090 24 GB, B A100 80 GB, C M3 Max 64 GB: largest model and method for each"
    a, b, c = (advise_method(preset_hardware(k)) for k in ("rtx-4090", "a100-80", "apple-m-64"))
    assert 20 <= a.largest_model_b["qlora"] <= 35 and 7 <= a.largest_model_b["lora"] <= 14
    assert b.largest_model_b["qlora"] >= 70 and b.largest_model_b["full"] >= 7  # 70B QLoRA, 7B full
    assert c.largest_model_b["qlora"] is None and any("Mac" in x for x in c.caveats)
    assert c.largest_model_b["lora"] > a.largest_model_b["lora"]


def test_t4_warns_there_is_no_bf16_and_several_gpus_say_memory_is_per_gpu():
    assert any("bfloat16" in c for c in advise_method(preset_hardware("t4")).caveats)
    caveat = next(c for c in advise_method(preset_hardware("l4", count=4)).caveats if "GPUs" in c)
    assert "one GPU's memory decides" in caveat and "FSDP" in caveat


def test_dataset_size_is_compared_with_the_stage_range():
    data = recommend(["capability"]).data
    assert compare_dataset(data, 500)[0] == "low"
    assert compare_dataset(data, 3000)[0] == "ok"
    assert compare_dataset(data, 50000)[0] == "high"
    assert "2,000" in compare_dataset(data, 500)[1]


def test_unknown_or_missing_goal_is_a_sentence_listing_the_valid_ones():
    with pytest.raises(RecommendError, match="Valid goals: capability, format, quality"):
        recommend(["facts"])
    with pytest.raises(RecommendError, match="at least one"):
        recommend([])


def test_lesson_tables_are_complete():
    data = lesson()
    assert set(data["stages"]) == set(STAGES)
    for key in ("spectrum", "rlhf_vs_dpo", "peft", "matrix", "misconceptions"):
        assert data[key], key
    assert goal_keys() == [
        "capability",
        "format",
        "quality",
        "style",
        "style-refine",
        "safety",
        "knowledge",
        "refinement",
        "new-language",
    ]


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "engine.recommend", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_cli_json_for_the_task_api_assistant():
    out = _cli("--goal", "capability", "--goal", "quality", "--gpu", "rtx-3060", "--json")
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["pipeline"] == ["sft"] and rec["peft"] == "qlora" and rec["consider_rag"] is False
    assert (rec["data"]["min_examples"], rec["data"]["max_examples"]) == (2000, 5000)
    assert isinstance(rec["reasons"], list) and rec["reasons"]


def test_cli_vram_gib_and_errors_exit_2_with_the_valid_choices():
    out = _cli("--goal", "knowledge", "--vram-gib", "12", "--json")
    assert json.loads(out.stdout)["peft"] == "qlora" and json.loads(out.stdout)["consider_rag"] is True
    bad_goal = _cli("--goal", "facts")
    assert bad_goal.returncode == 2 and "capability" in bad_goal.stderr and "new-language" in bad_goal.stderr
    bad_gpu = _cli("--goal", "safety", "--gpu", "rtx-9090")
    assert bad_gpu.returncode == 2 and "rtx-4090" in bad_gpu.stderr and "apple-m-64" in bad_gpu.stderr


def test_applying_a_plan_moves_a_default_learning_rate_but_keeps_a_chosen_one():
    from engine.recommend import apply_to_spec
    from engine.spec import RunSpec, default_learning_rate

    spec = apply_to_spec(RunSpec(), stage="dpo", method="qlora")
    assert (spec.stage, spec.method, spec.learning_rate) == (
        "dpo",
        "qlora",
        default_learning_rate("dpo", "qlora", spec.model_name_or_path),
    )
    mine = apply_to_spec(RunSpec(learning_rate=3e-4), stage="dpo")
    assert mine.learning_rate == 3e-4


def test_a_consistent_output_format_is_its_own_goal_and_means_sft():
    rec = recommend(["format"])
    assert rec.pipeline == ["sft"]
    assert "format" in lesson()["goals"]["format"]["why"] and "JSON" in lesson()["goals"]["format"]["label"]


def test_the_plan_names_base_models_that_fit_with_reasons():
    from engine import estimate

    rec = recommend(["capability"], preset_hardware("rtx-4090"))
    models = rec.base_models
    assert 2 <= len(models) <= 3
    assert len({m["model"].split("/")[0] for m in models}) >= 2, "more than one family to compare"
    for m in models:
        peak = estimate.peak_gib(
            estimate.EstimateRequest(model=m["model"], method=rec.peft, seq=1024, batch=4, grad_ckpt=True)
        )
        assert peak <= 24 * 0.9, "each one fits the card with the plan's method"
        assert m["licence"] and m["languages"] and m["why"]
    assert models[1]["billions"] <= models[0]["billions"] / 3, "a small one for quick first runs"


def test_preference_stages_start_from_instruct_models_and_pretraining_from_base_models():
    a100 = preset_hardware("a100-80")
    assert all(m["kind"] == "instruct" for m in base_models(["dpo"], a100, "lora"))
    assert all(m["kind"] == "base" for m in base_models(["pt", "sft"], a100, "lora"))
    restrictive = [m for m in base_models(["pt", "sft"], a100, "lora") if m["licence"].split(" (")[0] not in PERMISSIVE]
    assert all("read its terms before you ship" in m["licence"] for m in restrictive)


def test_a_cpu_plan_starts_from_the_embedded_model_and_offers_what_the_hardware_page_says_trains_in_an_hour():
    from engine.estimate import SHOWCASE_RUN, gpu_from_hardware, largest_model

    for hw in (this_computer(), preset_hardware("cpu")):
        models = recommend(["format"], hw).base_models
        within_an_hour = largest_model(SHOWCASE_RUN, hw.vram_gib, "lora", gpu_from_hardware(hw), max_hours=1.0)
        assert [m["model"] for m in models] == ["embedded", within_an_hour]  # the Hardware page's second row
        assert "within an hour" in models[1]["why"] and " min" in models[0]["why"]
