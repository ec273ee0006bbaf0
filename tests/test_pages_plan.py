"""AppTest for the Goal and Hardware pages: what a student sees and what the pages hand to the next steps."""

import dataclasses
import re

import pynvml
import pytest
from streamlit.testing.v1 import AppTest

from conftest import fake_nvml
from engine import hardware
from engine.hardware import preset_hardware, this_computer
from engine.paths import REPO
from ui.session import model_label

MIB = 1024**2


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine has no NVIDIA driver, whatever machine the tests run on."""

    def init():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", init)
    hardware._read_nvml.cache_clear()
    yield
    hardware._read_nvml.cache_clear()


@pytest.fixture
def two_h200s(monkeypatch):
    fake_nvml(monkeypatch, "NVIDIA H200", 2, total_mib=143771, used_mib=4096)
    yield
    hardware._read_nvml.cache_clear()


def billions(model: str) -> float:
    """Parameters of a catalog model, in billions (the estimator's count)."""
    from engine import catalog, vram

    return vram.Shape.from_config(catalog.load_config(model)).params() / 1e9


def app(**state) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def texts(at, *kinds) -> str:
    return "\n".join(str(e.value) for kind in kinds for e in at.get(kind))


def alerts(at) -> str:
    return texts(at, "info", "warning", "success", "error")


def tick(at, *goals) -> AppTest:
    for goal in goals:
        at.checkbox(key=f"goal_{goal}").check()
    return at.run()


def test_goal_page_asks_for_a_goal_first(no_gpu):
    at = app()
    assert not at.exception
    assert "Tick at least one goal" in alerts(at)
    assert "recommendation" not in at.session_state
    assert len(at.checkbox) == 9


def test_task_api_assistant_on_a_consumer_gpu_gets_qlora_sft_with_2000_to_5000_examples(no_gpu):
    at = tick(app(hardware=preset_hardware("rtx-3060")), "capability", "quality")
    assert not at.exception
    assert "#### Supervised fine-tuning" in texts(at, "markdown")
    metrics = {m.label: m.value for m in at.metric}
    assert (
        metrics["Method"] == "QLoRA"
        and metrics["Examples for the first stage (Supervised fine-tuning)"] == "2,000–5,000"
    )
    at.button[0].click().run()  # "Use this plan"
    assert "Saved: your first run will be **supervised fine-tuning** with **QLoRA**" in texts(at, "success")
    spec = at.session_state.spec
    assert (spec.stage, spec.method, spec.learning_rate) == ("sft", "qlora", 1e-3)  # small-model LoRA rate
    assert at.session_state.recommendation.pipeline == ["sft"]


def test_the_model_chosen_among_the_recommended_ones_is_saved_with_the_plan(no_gpu):
    at = tick(app(hardware=preset_hardware("rtx-3060")), "capability", "quality")
    start = next(r for r in at.radio if r.label == "Start from")
    recommended = [b["model"] for b in at.session_state.recommendation.base_models]
    # nothing changes until one is picked; each says what kind of model it is (base or instruction-tuned)
    assert start.value == "embedded" and start.options[1:] == [model_label(m) for m in recommended]
    start.set_value(recommended[0]).run()
    at.button[0].click().run()  # "Use this plan"
    assert f"starting from **{model_label(recommended[0])}**" in texts(at, "success")
    spec = at.session_state.spec
    assert (spec.model_name_or_path, spec.method) == (recommended[0], "qlora")
    assert spec.learning_rate != 1e-3  # the rate follows the larger model (1e-3 is the bundled model's)


def test_customer_support_chatbot_gets_sft_then_dpo_with_rag_and_an_rlhf_plan_b(no_gpu):
    at = tick(app(), "knowledge", "style", "safety")
    assert "#### Supervised fine-tuning → DPO (preferences)" in texts(at, "markdown")
    shown = alerts(at)
    assert "Consider RAG" in shown
    assert "Plan B: Supervised fine-tuning → Reward model → RL (GRPO)" in shown
    assert "forgetting" in shown and "70B" in shown
    table = next(t.value for t in at.table if "Or also" in t.value.columns)
    per_goal = {need: (row["Training stage"], row["Or also"]) for need, row in table.iterrows()}
    sft, dpo = "supervised fine-tuning (SFT)", "preference tuning (DPO)"
    assert per_goal["Knowledge injection (teach it facts)"] == (
        sft,
        "retrieval (RAG): no training, look facts up at answer time",
    )
    assert per_goal["A different style or persona (a big change)"] == (sft, dpo)
    assert per_goal["Safer, more aligned outputs"] == (dpo, "reward model + reinforcement learning (RLHF)")
    at.button[0].click().run()
    assert (at.session_state.spec.stage, at.session_state.spec.method) == ("sft", "lora")  # CPU here: no QLoRA


def test_goal_page_compares_the_students_dataset_with_the_range(no_gpu, tmp_path):
    at = tick(app(), "capability")
    at.number_input[0].set_value(500).run()
    assert "You have 500 examples; this usually needs at least 2,000" in alerts(at)
    at.number_input[0].set_value(3000).run()
    assert "inside the usual 2,000-5,000" in texts(at, "success")
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(f'{{"input": "task {i}", "output": "done {i}"}}\n' for i in range(120)))
    at = tick(app(spec=dataclasses.replace(at.session_state.spec, dataset_name=str(data))), "capability")
    assert "**mine.jsonl** has 120 usable rows" in texts(at, "caption")
    assert "You have 120 examples" in alerts(at)


def test_hardware_page_without_a_gpu_plans_for_this_computer_and_offers_presets(no_gpu):
    at = app()
    at.switch_page("app_pages/hardware.py").run()
    assert not at.exception
    assert "No NVIDIA GPU was found" in alerts(at)
    assert at.selectbox[0].value == "here"
    hw = at.session_state.hardware
    assert (hw.kind, hw.detected, hw.count) == ("cpu", True, 1)
    assert "QLoRA is not offered here" in alerts(at)
    assert at.get("page_link")[0].proto.page == "estimate"
    assert any("works it out for your own model" in c.value for c in at.caption)
    next(b for b in at.button if "on this hardware" in b.label).click().run()  # the showcase path on a laptop
    spec = at.session_state.spec
    assert (spec.method, spec.max_steps, spec.eval_steps, spec.lr_scheduler_type, spec.lora_dropout) == (
        "lora",
        100,
        100,
        "constant",
        0.0,
    )
    assert "100 training steps, then one check on examples it never saw" in texts(at, "success")
    at.switch_page("app_pages/train.py").run()  # the Train page says how long that run takes here, before Start
    assert not at.exception
    plan_line = next(c for c in texts(at, "caption").split("\n") if "Your plan trains" in c)
    minutes = re.search(r"About \*\*(\d+) min\*\* on this computer", plan_line)
    assert minutes and 1 <= int(minutes.group(1)) <= 15, plan_line
    assert "33% of one pass over the data's 2,400 rows" in plan_line  # 800 examples of the bundled set
    first_line = plan_line
    next(w for w in at.number_input if w.label.startswith("Max steps")).set_value(12).run()
    plan_line = next(c for c in texts(at, "caption").split("\n") if "Your plan trains" in c)
    assert "**12 steps" in plan_line, "the summary follows Max steps before Start"
    assert first_line.split("examples**")[1] != plan_line.split("examples**")[1], "and so do its passes and time"
    next(w for w in at.number_input if w.label.startswith("Max steps")).set_value(600).run()
    plan_line = next(c for c in texts(at, "caption").split("\n") if "Your plan trains" in c)
    assert "= 4,800 examples**, 2 passes over the data's 2,400 rows" in plan_line  # not "2 of one pass"


@pytest.mark.parametrize(
    "preset, method, words",
    [
        ("rtx-3060", "QLoRA", "consumer-GPU territory"),
        ("rtx-4090", "LoRA", "full fine-tuning fits small"),
        ("a100-80", "LoRA", "any method is viable"),
        ("apple-m-64", "LoRA", "QLoRA is not available on a Mac"),
    ],
)
def test_hardware_page_recommends_a_method_with_reasons(no_gpu, preset, method, words):
    at = app()
    at.switch_page("app_pages/hardware.py").run()
    at.selectbox[0].select(preset).run()
    assert f"Recommended method: {method}" in texts(at, "subheader")
    assert words in texts(at, "markdown") + alerts(at)
    hw = at.session_state.hardware
    for attribute in ("name", "vram_gib", "count", "bf16", "tflops_bf16", "usd_per_hour", "kind", "detected"):
        assert hasattr(hw, attribute)
    assert hw.preset == preset and not hw.detected


def test_hardware_choice_updates_the_goal_plan_and_the_spec(no_gpu):
    at = tick(app(), "capability")
    at.switch_page("app_pages/hardware.py").run()
    at.selectbox[0].select("t4").run()
    assert at.session_state.recommendation.peft == "qlora"
    assert "no bfloat16" in alerts(at)
    at.button[1].click().run()  # "Use QLoRA on this hardware"
    assert at.session_state.spec.method == "qlora" and "Saved: method **QLoRA**" in texts(at, "success")
    at.switch_page("app_pages/hardware.py").run()  # coming back keeps the choice
    assert at.selectbox[0].value == "t4"


def test_several_detected_gpus_are_shown_and_set_the_process_count(two_h200s):
    at = app()
    at.switch_page("app_pages/hardware.py").run()
    assert "Found 2 NVIDIA GPUs · driver 570.86.15 · CUDA 12.8" in alerts(at)
    gpus = at.dataframe[0].value
    assert list(gpus["GPU"]) == ["NVIDIA H200", "NVIDIA H200"] and gpus["Compute capability"][0] == "9.0"
    hw = at.session_state.hardware
    assert (hw.count, hw.detected, hw.preset, hw.tflops_bf16) == (2, True, "h200", 989.0)
    at.button[1].click().run()
    assert at.session_state.spec.num_processes == 2


def test_the_lessons_exercise_is_answered_on_the_hardware_page(no_gpu):
    at = app()
    at.switch_page("app_pages/hardware.py").run()
    exercise = at.dataframe[-1].value.set_index("Machine")
    # the estimator's answer at 2048 tokens x 1 with checkpointing, not the lesson's 7B table scaled
    assert 7 < billions(exercise.loc["NVIDIA RTX 4090 24 GB", "LoRA"]) < 9, "an 8B-class model"
    assert billions(exercise.loc["NVIDIA A100 80 GB", "QLoRA"]) > 65, "a 70B-class model"
    assert exercise.loc["Apple M-series Max, 64 GB unified memory (e.g. M3 Max)", "QLoRA"] == "not offered here"


def test_hardware_with_several_gpus_shows_what_fsdp_adds(no_gpu):
    at = app()
    at.switch_page("app_pages/hardware.py").run()
    at.selectbox[0].set_value("rtx-4090").run()
    at.number_input[0].set_value(2).run()
    assert not at.exception
    table = at.table[0].value
    assert list(table.index) == ["One copy per GPU", "Sharded across the 2 GPUs (FSDP)"]
    one, sharded = table.loc["One copy per GPU", "LoRA"], table.loc["Sharded across the 2 GPUs (FSDP)", "LoRA"]
    assert 7 < billions(one) < 9 and billions(sharded) > billions(one), "bigger, sharded"
    assert any("FSDP splits all three 2 ways" in i.value for i in at.info)


def test_the_goal_page_names_models_to_start_from_for_the_hardware(no_gpu):
    at = app(hardware=preset_hardware("rtx-4090"))
    at = tick(at, "capability")
    shown = next(m.value for m in at.markdown if "The largest that fits" in m.value)
    lines = [line for line in shown.splitlines() if line.startswith("- **")]
    assert 2 <= len(lines) <= 3 and all(" · " in line and "B · " in line for line in lines)
    assert "fits NVIDIA RTX 4090 24 GB" in shown and "Apache-2.0" in shown
    assert any("Which model to start from" in s.value for s in at.subheader)


def test_on_a_processor_goal_and_hardware_offer_the_same_model_by_the_same_rule(no_gpu):
    at = app()
    at.switch_page("app_pages/hardware.py").run()
    hour_row = at.table[0].value.loc["Trains 100 steps within an hour"]
    at.switch_page("app_pages/goal.py").run()
    at = tick(at, "format")
    start = next(r for r in at.radio if r.label == "Start from")
    assert start.options[1:] == [model_label(hour_row["LoRA"])]  # the Hardware page's model, beside the bundled one
    assert "train within an hour on **This computer" in texts(at, "caption")


def test_with_two_gpus_the_train_page_offers_how_many_and_how_they_share(two_h200s):
    at = app()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    labels = [w.label for w in at.number_input] + [w.label for w in at.selectbox]
    assert "GPUs for this run (one training process each)" in labels and "How the GPUs share the model" in labels


def test_a_plan_for_a_gpu_preset_says_on_goal_estimate_and_train_that_runs_train_on_this_computer():
    # A newcomer who planned for an RTX 4090 is offered 8B models on the Goal page; on a laptop, Start would train
    # them on its processor. Every page that speaks of the planned hardware says so.
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    at.session_state["hardware"] = preset_hardware("rtx-4090")
    at.checkbox(key="goal_format").check().run()
    for page in ("app_pages/goal.py", "app_pages/estimate.py", "app_pages/train.py"):
        at.switch_page(page).run()
        assert not at.exception
        warnings = " ".join(w.value for w in at.warning)
        assert "Your plan is for **NVIDIA RTX 4090 24 GB**, but runs started here train on" in warnings, page
    at.session_state["hardware"] = this_computer()
    at.switch_page("app_pages/goal.py").run()
    assert not any("Your plan is for" in w.value for w in at.warning), "no warning when planning for this computer"
