"""AppTest of the Estimate page: it renders, reacts, writes the plan, times the run from the plan's data, and
speaks of RAM, not GPU memory, on a computer without a GPU."""

import dataclasses
from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine import plans, users
from engine.estimate import SHOWCASE_RUN, gpu_from_hardware, largest_model
from engine.hardware import preset_hardware
from engine.spec import CPU_RUN

APP = Path(__file__).resolve().parent.parent / "app.py"


def _open(**state):
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page("app_pages/estimate.py")
    at.run()
    assert not at.exception
    return at


def _widget(elements, label):
    return next(e for e in elements if e.label.startswith(label))


def _words(at) -> str:
    """Everything a person reads on the page (not the sidebar)."""
    parts = [
        e.value
        for kind in ("markdown", "caption", "info", "success", "warning", "error", "subheader")
        for e in at.main.get(kind)
    ]
    parts += [f"{m.label} {m.value}" for m in at.main.metric]
    parts += [" ".join(map(str, df.value.columns)) + " " + df.value.to_string() for df in at.main.dataframe]
    parts += [
        w.label + " " + " ".join(map(str, getattr(w, "options", [])))
        for kind in ("radio", "selectbox")
        for w in at.main.get(kind)
    ]
    parts += [chart.proto.spec for chart in at.main.get("plotly_chart")]
    return " ".join(parts)


def _cpu_plan(at):
    at.session_state.spec = dataclasses.replace(at.session_state.spec, **CPU_RUN)  # the Hardware page's CPU plan
    at.session_state.hardware = preset_hardware("cpu")


def test_page_renders_estimate_without_hardware():
    at = _open()
    text = " ".join(m.value for m in at.markdown) + " ".join(i.value for i in at.info)
    assert "Hardware page" in text
    assert any(m.label == "Peak GPU memory" for m in at.metric)
    assert at.get("plotly_chart")
    assert any("Lesson" in df.value.columns for df in at.dataframe)


def test_too_big_run_is_flagged_with_a_fix():
    at = _open()
    at.selectbox[0].set_value("rtx-4090").run()  # plan for a 24 GB card
    at.selectbox[1].set_value("meta-llama/Llama-3.1-8B").run()
    at.radio[0].set_value("full").run()
    assert not at.exception
    assert at.error and "Does not fit" in at.error[0].value and "Cheapest change" in at.error[0].value
    # a run that cannot train here has no time of its own: the figure is said to be the settings', as set
    assert "time and cost above are for the run as set" in at.error[0].value
    assert [m.label for m in at.metric][-1] == "Time · cost as set"


def test_button_writes_settings_into_the_spec():
    at = _open()
    at.radio[0].set_value("qlora").run()
    at.checkbox[0].check().run()
    at.button[0].click().run()
    spec = at.session_state.spec
    assert spec.method == "qlora" and spec.gradient_checkpointing is True


def test_a_run_that_fits_only_with_checkpointing_says_training_turns_it_on():
    at = _open()
    at.selectbox[0].set_value("rtx-4090").run()  # 24 GB; 8B LoRA at 512 x 8 needs ~36 GiB without checkpointing
    at.selectbox[1].set_value("meta-llama/Llama-3.1-8B").run()
    assert not at.exception
    assert at.warning and "checkpoints by itself only as much as it must" in at.warning[0].value
    assert "gradient checkpointing on, every layer" in at.warning[0].value
    assert not at.error
    from engine.estimate import EstimateRequest, estimate_run, load_gpu

    req = EstimateRequest(model="meta-llama/Llama-3.1-8B", examples=2400, tokens_per_example=71)  # as on the page
    time = next(m for m in at.metric if m.label == "Time · cost").value
    as_set = estimate_run(req, load_gpu("rtx-4090")).hours * 60
    assert time != f"{as_set:.0f} min", "timed as it will train: with the checkpointing it turns on, slower"


def test_a_run_a_little_too_big_is_told_only_some_layers_get_checkpointed():
    at = _open()
    at.selectbox[0].set_value("rtx-4090").run()  # Qwen3-0.6B LoRA at 2048 x 8: ~26 GiB without checkpointing
    at.selectbox[1].set_value("Qwen/Qwen3-0.6B").run()
    _widget(at.select_slider, "Sequence length").set_value(2048).run()
    assert not at.exception and not at.error
    assert at.warning and "gradient checkpointing on for 7 of 28 layers (every 4)" in at.warning[0].value


def test_a_run_that_fits_only_without_the_trainers_margin_is_told_it_will_checkpoint_a_few_layers():
    at = _open()
    at.selectbox[0].set_value("rtx-4090").run()  # Qwen3-1.7B LoRA at 1024 x 8: ~22.4 GiB of the 24, under 10 % spare
    at.selectbox[1].set_value("Qwen/Qwen3-1.7B").run()
    _widget(at.select_slider, "Sequence length").set_value(1024).run()
    assert not at.exception and not at.error and not at.warning
    fits = at.success[0].value
    assert fits.startswith("Fits, with little to spare") and "on for 4 of 28 layers (every 8)" in fits, fits


def test_the_bundled_sets_token_statistics_time_the_run_before_the_data_page_is_visited():
    from engine.data import bundled
    from engine.datastats import token_stats
    from engine.estimate import mean_tokens

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    _cpu_plan(at)
    at.switch_page("app_pages/estimate.py").run()  # straight here: the Data page was never opened
    assert not at.exception
    expected = mean_tokens(token_stats(bundled("sft"), "sft")["lengths"], 512)
    assert 50 < expected < 120  # short Task API requests, far below the 512 a guess would assume
    assert _widget(at.number_input, "Examples the run will see").value == 800  # 100 steps x 8
    assert _widget(at.number_input, "Average tokens per example").value == expected
    before = _widget(at.metric, "Time").value
    assert before.endswith("min") and int(before.split()[0]) < 15  # minutes, not the 35 min of a 512-token guess
    at.switch_page("app_pages/data.py").run()
    assert not at.exception
    at.switch_page("app_pages/estimate.py").run()
    assert _widget(at.metric, "Time").value == before  # the Data page's visit changes nothing


def test_choosing_dpo_and_saving_puts_every_field_shown_into_the_plan():
    at = _open()
    _widget(at.selectbox, "Stage").set_value("dpo").run()
    _widget(at.select_slider, "LoRA rank").set_value(32).run()
    _widget(at.radio, "Method").set_value("full").run()
    _widget(at.select_slider, "Sequence length").set_value(1024).run()
    _widget(at.slider, "Micro-batch").set_value(4).run()
    _widget(at.selectbox, "Optimizer").set_value("adamw_8bit").run()
    _widget(at.number_input, "Examples the run will see").set_value(400).run()
    _widget(at.button, "Use these settings").click().run()
    assert not at.exception
    spec = at.session_state.spec
    assert (spec.stage, spec.method, spec.max_length, spec.per_device_train_batch_size, spec.optim, spec.lora_r) == (
        "dpo",
        "full",
        1024,
        4,
        "adamw_8bit",
        32,
    )
    assert spec.max_steps == 100  # the 400 examples timed above, 4 a step
    assert spec.learning_rate == 5e-7  # the DPO default for full fine-tuning, not SFT's
    saved = next(s.value for s in at.success if "Saved to your plan" in s.value)
    assert "DPO (preferences)" in saved and "Full fine-tuning" in saved and "100 steps" in saved
    assert "DPO (preferences)" in " ".join(m.value for m in at.sidebar.markdown)
    assert plans.load(users.OWNER.name)["spec"]["stage"] == "dpo"  # kept server-side too


def test_a_computer_without_a_gpu_gets_cpu_words():
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    _cpu_plan(at)
    at.switch_page("app_pages/estimate.py").run()
    assert not at.exception
    words = _words(at)
    assert "Peak memory (RAM)" in words
    for gpu_word in ("Peak GPU memory", "CUDA context", "owned GPU", "per GPU"):
        assert gpu_word not in words
    assert "PyTorch and Python themselves" in words  # the part a CUDA context is on a GPU
    assert _widget(at.radio, "Method").options == ["Full fine-tuning", "LoRA"]  # no QLoRA, as the Hardware page said
    assert "QLoRA is not offered here" in words
    assert "SmolLM2-135M-Instruct (bundled with the app)" in words and "supervised fine-tuning" in words
    largest = at.main.dataframe[0].value
    assert list(largest.columns)[1:] == [
        "Fits in RAM",
        "Trains these 800 examples within an hour",
    ]  # time, not only memory, caps it on a CPU
    # the Hardware page's CPU table is the showcase-sized run, not 2048 tokens x 1: said so, and the same model
    assert "(800 examples: 33% of one pass over your 2,400 rows)" in words
    assert "2048 tokens" not in words and "assume the showcase-sized run: 800 examples of 71 tokens" in words
    hw = preset_hardware("cpu")
    lora = largest.set_index("Method").loc["LoRA"]
    assert lora.iloc[1] == largest_model(SHOWCASE_RUN, hw.vram_gib, "lora", gpu_from_hardware(hw), max_hours=1.0)


def test_the_ram_reads_as_on_the_hardware_page():
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    _cpu_plan(at)
    at.session_state.hardware = dataclasses.replace(preset_hardware("cpu"), vram_gib=23.5)
    at.switch_page("app_pages/estimate.py").run()
    assert "of 23.5 GiB" in at.success[0].value  # the Hardware page's metric says 23.5 GiB, not 24


def test_a_plan_for_qlora_shows_the_recommended_lora_on_a_cpu():
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    _cpu_plan(at)
    at.session_state.spec = dataclasses.replace(at.session_state.spec, method="qlora")
    at.switch_page("app_pages/estimate.py").run()
    assert not at.exception and _widget(at.radio, "Method").value == "lora"


def test_two_gpus_offer_fsdp_where_ddp_does_not_fit_and_the_plan_keeps_it():
    at = _open(hardware=preset_hardware("rtx-4090", count=2))
    _widget(at.selectbox, "Model").set_value("meta-llama/Llama-3.2-3B").run()
    _widget(at.radio, "Method").set_value("full").run()
    _widget(at.checkbox, "Gradient checkpointing").check().run()
    words = _words(at)
    assert "Peak GPU memory per GPU" in words
    assert "With DDP every one of the 2 GPUs holds the whole model" in words, words
    _widget(at.radio, "How the 2 GPUs share the model").set_value("fsdp").run()
    assert not at.exception and not at.error, "sharded, it fits"
    at.button[0].click().run()
    spec = at.session_state.spec
    assert (spec.num_processes, spec.distributed, spec.method) == (2, "fsdp", "full")
    assert "2 GPUs (FSDP)" in at.success[-1].value


def test_a_what_if_that_differs_from_the_plan_says_it_is_kept_only_with_use_these_settings():
    at = _open()
    assert not any("from your plan" in i.value for i in at.info), "a first visit changes nothing"
    _widget(at.slider, "Micro-batch").set_value(11).run()
    note = next(i.value for i in at.info if "from your plan" in i.value)
    assert note.startswith("You changed the batch size from your plan.")
    _widget(at.select_slider, "Sequence length").set_value(1024).run()
    _widget(at.checkbox, "Gradient checkpointing").check().run()
    note = next(i.value for i in at.info if "from your plan" in i.value)
    assert note.startswith("You changed the length, batch size and checkpointing from your plan."), note
    next(b for b in at.button if b.label == "Use these settings for training").click().run()
    assert at.session_state.spec.per_device_train_batch_size == 11
    assert not any("from your plan" in i.value for i in at.info), "saved: nothing left to lose"


def test_the_cpu_plan_saved_with_another_batch_leaves_nothing_unsaved():
    at = _open()
    _cpu_plan(at)
    at.run()
    assert not any("from your plan" in i.value for i in at.info)
    _widget(at.slider, "Batch").set_value(6).run()
    assert any(i.value.startswith("You changed the batch size from") for i in at.info)
    next(b for b in at.button if b.label == "Use these settings for training").click().run()
    assert at.session_state.spec.max_steps == 134  # the same 800 examples in batches of 6
    assert not any("from your plan" in i.value for i in at.info)
