"""AppTest of the Estimate page: it renders, reacts, and writes the plan."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parent.parent / "app.py"


def _open():
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("app_pages/estimate.py")
    at.run()
    assert not at.exception
    return at


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
    assert at.warning and "turns checkpointing on by itself" in at.warning[0].value
    assert not at.error


def test_a_capped_run_and_checked_data_set_the_time():
    import dataclasses
    at = _open()
    at.session_state.spec = dataclasses.replace(at.session_state.spec, max_steps=100)  # the CPU path's plan
    at.session_state.data_stats = {"dataset": "", "rows": 2400, "mean_tokens": 77}  # left by the Data page
    at.run()
    examples = next(n for n in at.number_input if n.label == "Training examples")
    tokens = next(n for n in at.number_input if n.label.startswith("Average tokens per example"))
    assert (examples.value, tokens.value) == (800, 77)
    assert any("61,600 tokens (800 examples × 1 epoch)" in c.value for c in at.caption)
