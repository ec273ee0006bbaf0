"""A real browser (Debian's chromium, driven by Playwright) against the running app: the first page a person
sees, and a training run started from the Train page and watched until it completes."""

import os

import pytest
import yaml

from conftest import CHROMIUM, CHROMIUM_ARGS, pick_another_model, start_app, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="`make test` installs chromium")


@pytest.fixture
def server(tunewise_home):
    url, proc = start_app(env={"TUNEWISE_HOME": str(tunewise_home)})
    yield url
    os.killpg(proc.pid, 9)
    proc.wait()


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(60_000)
        tab.goto(server)
        yield tab
        browser.close()


def test_the_app_opens_on_the_goal_page(page):
    page.get_by_text("What should the model learn?").wait_for()
    assert page.get_by_role("link", name="5 · Train").is_visible()


def test_a_run_started_in_the_browser_trains_and_its_chart_fills(page, tiny_model):
    page.get_by_role("link", name="5 · Train").click()
    page.get_by_text("Start training").wait_for()
    pick_another_model(page, str(tiny_model))
    page.get_by_role("spinbutton", name="Max steps (optimizer steps; -1 = use Epochs)").fill("8")
    page.get_by_text("More settings").click()
    page.get_by_role("spinbutton", name="Batch size per device").fill("2")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("python -m engine.train --config").wait_for(timeout=300_000)
    page.get_by_text("completed").first.wait_for(timeout=600_000)
    assert page.get_by_text("step 8 / 8").is_visible()
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)  # the loss chart is drawn (plotly mounts late)


def test_the_showcase_path_from_goal_to_export(page, embedded_dir):
    """The lesson's Task API assistant, as a student walks it: goal -> hardware -> estimate -> data -> a short
    training run of the embedded model -> side-by-side answers, evaluation and an adapter download."""
    page.get_by_text("New capabilities the model lacks").click()
    page.get_by_role("button", name="Use this plan").click()
    page.get_by_role("link", name="2 · Hardware").click()
    page.get_by_text("CPU", exact=False).first.wait_for()
    page.get_by_role("link", name="3 · Estimate").click()
    page.get_by_text("Will it fit").wait_for()
    page.get_by_role("link", name="4 · Data").click()
    page.get_by_text("Usable rows").wait_for()
    assert page.get_by_text("2,400").first.is_visible(), "the bundled Task API set is checked"

    page.get_by_role("link", name="5 · Train").click()
    page.get_by_role("spinbutton", name="Max steps (optimizer steps; -1 = use Epochs)").fill("2")
    page.get_by_text("More settings").click()
    page.get_by_role("spinbutton", name="Batch size per device").fill("2")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("completed").first.wait_for(timeout=600_000)

    page.get_by_role("link", name="7 · Try & Export").click()
    page.get_by_role("button", name="Answer with both models").click()
    page.get_by_text("Base model (before training)").wait_for(timeout=300_000)
    page.get_by_role("spinbutton", name="Held-out rows to use").fill("5")
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_text("valid JSON").first.wait_for(timeout=600_000)
    page.get_by_role("button", name="Export").click()
    download = page.get_by_role("button", name="Download")
    download.wait_for(timeout=300_000)
    with page.expect_download() as info:
        download.click()
    assert info.value.suggested_filename.endswith(".zip")


def test_a_two_stage_pipeline_runs_to_the_end_from_the_goal_page(page, embedded_dir):
    """SFT then DPO of the embedded model, queued at once from the Goal page; the Runs page shows one pipeline row
    and DPO starts from the SFT result by itself."""
    page.get_by_text("New capabilities the model lacks").click()
    page.get_by_text("Refine a behaviour").click()
    page.get_by_text("Run the whole pipeline").wait_for()
    page.get_by_role("spinbutton", name="Optimizer steps per stage").fill("1")
    page.get_by_role("spinbutton", name="Optimizer steps per stage").press("Enter")
    page.get_by_role("button", name="Run this pipeline").click()
    page.get_by_text("Queued as runs 1, 2").wait_for()
    page.get_by_role("link", name="Watch the pipeline on the Runs page").click()
    page.get_by_text("stage 1 of 2").first.wait_for()  # the Watch picker (the table is drawn on a canvas)
    from engine import runs
    from engine.users import OWNER

    ended = lambda: all(r["state"] in ("completed", "failed", "stopped") for r in runs.list_runs(OWNER))  # noqa: E731
    wait_for(ended, timeout=900)
    first, second = runs.list_runs(OWNER)
    assert (first["state"], second["state"]) == ("completed", "completed"), second["error"]
    assert yaml.safe_load(open(f"{second['run_dir']}/config.yaml"))["init_from"] == first["run_dir"]
    page.get_by_text("Run 1: completed").wait_for()  # the page watching it followed the change
