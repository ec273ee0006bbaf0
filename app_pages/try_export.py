"""Try & Export: ask the base model and a finished run the same thing, measure both on held-out data, take the
result away. Every model call is a `python -m engine.*` subprocess; this page only reads what they return."""

from pathlib import Path

import streamlit as st

from engine import access, evaluate, gguf_file, modelfile
from engine.generate import ResultError, finished_run
from engine.recommend import METHOD_NAMES
from engine.spec import STAGE_NAMES
from ui import try_export as ui
from ui.session import actor

user = actor()

st.title("7 · Try & Export")
st.caption(
    "See whether training helped: the same prompt to the model you started from and to your run, numbers on "
    "examples the run never saw, and a download of the result."
)

done = ui.finished_runs(user)
picked = st.selectbox(
    "Finished run",
    [r["run_dir"] for r in done],
    index=0 if done else None,
    format_func=lambda d: next(ui.label(r, owner=user.role == "instructor") for r in done if r["run_dir"] == d),
    placeholder="no finished runs yet",
)
with st.expander("A run from somewhere else (a folder on this server)"):
    typed = st.text_input("Run folder", placeholder="/path/to/a/run (one with config.yaml and final/)")
run_dir = typed.strip() or picked
if not run_dir:
    st.info(
        "No finished run yet. Train one on the Train page (the Task API example trains in a few minutes on a "
        "CPU), or type the directory of a run above."
    )
    st.page_link("app_pages/train.py", label="Go to Train", icon="🚀")
    st.stop()
try:
    run_dir = str(access.check_run_dir(run_dir, user))  # a typed path must be one of this person's runs
    spec, final = finished_run(run_dir, "try")
except (ResultError, access.AccessError) as e:
    st.error(str(e))
    st.stop()
adapter = (final / "adapter_config.json").is_file()
if 0 < spec.max_steps < 50:
    st.warning(
        f"This run trained only {spec.max_steps} optimizer step{'s' if spec.max_steps > 1 else ''}: a quick check "
        "that training works, not a finished model, so expect rough answers. The bundled Task API example needs "
        "about 100 steps."
    )
st.caption(
    f"{STAGE_NAMES[spec.stage]} · {METHOD_NAMES.get(spec.method, spec.method)} · "
    f"{'a LoRA adapter' if adapter else 'a whole model'}, saved in `{final}`"
)

# ---------------------------------------------------------------- Playground
st.subheader("Playground")
if spec.stage == "rm":
    st.info("This run trained a reward model: it scores answers rather than writing them. Evaluate it below.")
else:
    prompt = st.text_area("Prompt", "Create a high priority task: Review Q4 budget", height=80)
    left, right = st.columns([1, 2])
    decoding = left.radio(
        "Decoding",
        ["greedy", "sampled"],
        horizontal=True,
        help="greedy: always the most likely next token, the same answer every time; sampled: "
        "draws tokens at random, so answers vary (temperature sets how much)",
    )
    temperature = right.slider("Temperature", 0.1, 1.5, 0.7, 0.1, disabled=decoding == "greedy")
    args = ["--run", run_dir, "--prompt", prompt, "--both", "--json"]
    args += ["--sample", "--temperature", temperature] if decoding == "sampled" else []
    if st.button("Answer with both models", type="primary"):
        with st.spinner("Loading the models and answering (a few seconds; longer on a busy CPU)..."):
            st.session_state.try_answers, st.session_state.try_error = ui.call("engine.generate", *args, user=user)
            st.session_state.try_answers_for = run_dir
    if st.session_state.get("try_answers_for") == run_dir:
        if st.session_state.get("try_error"):
            st.error(st.session_state.try_error)
        elif st.session_state.get("try_answers"):
            got = st.session_state.try_answers
            base_col, tuned_col = st.columns(2)
            base_col.markdown("**Base model** (before training)")
            base_col.code(got["answers"].get("base", ""), language=None, wrap_lines=True)
            tuned_col.markdown("**Fine-tuned** (this run)")
            tuned_col.code(got["answers"].get("tuned", ""), language=None, wrap_lines=True)
            st.caption(
                f"{'sampled, temperature ' + str(got['temperature']) if got['sample'] else 'greedy'} · "
                f"{got['seconds']} s"
            )
    st.caption("From a shell: `" + ui.shell("engine.generate", *args) + "`")

# ---------------------------------------------------------------- Evaluate
st.subheader("Evaluate")
st.caption(
    "Held-out loss and perplexity; for Task API data also the share of answers that are valid JSON with the "
    "right keys, priority, status and title. Base model vs this run, on rows the run did not train on."
)
limit = st.number_input(
    "Held-out rows to use",
    min_value=5,
    max_value=5000,
    value=60,
    step=20,
    help="More rows, steadier numbers; each row is answered by both models (~1 s each on a CPU)",
)
if st.button("Evaluate"):
    with st.spinner("Evaluating base and fine-tuned model on held-out rows (a minute or more on a CPU)..."):
        _, error = ui.call("engine.evaluate", run_dir, "--json", "--limit", int(limit), user=user)
    if error:
        st.error(error)
result = evaluate.read(run_dir)
if result:
    st.markdown(f"On the {result['held_out']} ({result.get('seconds', '?')} s):")
    st.dataframe(ui.eval_table(result), hide_index=True, use_container_width=True)
    chart = ui.eval_chart(result)
    if chart is not None:
        st.plotly_chart(chart, use_container_width=True, key="eval-chart")
    for line in result.get("not_measured", []):
        st.caption("Not measured: " + line)
    if result.get("examples"):
        with st.expander("Example answers"):
            st.dataframe(result["examples"], hide_index=True, use_container_width=True)
st.caption("From a shell: `" + ui.shell("engine.evaluate", run_dir, "--limit", int(limit)) + "`")

# ---------------------------------------------------------------- Export
st.subheader("Export")
kinds = {
    "adapter": "Small add-on (the LoRA adapter; needs the original model too)",
    "merged": "Complete model (works on its own, in Python)",
    "gguf": "One file to chat with on a laptop (Ollama, LM Studio, llama.cpp)",
}
choice = st.radio(
    "What to take away",
    list(kinds) if adapter else ["merged", "gguf"],
    format_func=kinds.get,
    help="To chat with your model on your own computer, take the one file (GGUF). To use it in Python code "
    "(transformers), take the complete model; the add-on is the smallest download when the other side already has "
    "the original model. Each download comes with HOW_TO_LOAD.md, which says how.",
)
if not adapter:
    st.caption("This run trained every weight (method full): the merged export is the full model as trained.")
if choice == "gguf":
    quants = gguf_file.quant_choices()
    quant = st.selectbox(
        "GGUF weights",
        quants,
        index=quants.index("q8_0"),
        format_func=ui.QUANT_LABELS.get,
        help="Q4_K_M appears when llama.cpp's llama-quantize is on this machine's PATH",
    )
    out = Path(run_dir) / "exports" / f"gguf-{quant}"
    export_args = [run_dir, "--out", out, "--gguf", "--quant", quant, "--json"]
    ready = out.is_dir()
else:
    out = Path(run_dir) / "exports" / (choice if adapter else "model")
    zip_path = out.with_name(out.name + ".zip")
    export_args = [run_dir, "--out", out, "--zip", "--json"] + (["--merge"] if choice == "merged" else [])
    ready = zip_path.is_file()
if not ready and st.button("Export"):
    with st.spinner("Writing the export (a GGUF takes a minute or two on a CPU)..."):
        _, error = ui.call("engine.export", *export_args, user=user)
    if error:
        st.error(error)
    else:
        st.rerun()  # show the download in place of the button
if ready and choice != "gguf":
    size_mib = zip_path.stat().st_size / 2**20
    st.download_button(
        f"Download {zip_path.name} ({size_mib:,.1f} MiB)",
        data=lambda: zip_path.read_bytes(),
        file_name=f"{Path(run_dir).name}-{zip_path.name}",
        mime="application/zip",
        on_click="ignore",
    )
    st.caption(f"Also on disk: `{out}`")
elif ready:
    gguf, name = ui.gguf_in(out), modelfile.ollama_name(Path(run_dir).name)
    left, right = st.columns(2)
    left.download_button(
        f"Download {gguf.name} ({gguf.stat().st_size / 2**20:,.1f} MiB)",
        on_click="ignore",
        data=lambda: gguf.read_bytes(),
        file_name=gguf.name,
        mime="application/octet-stream",
    )
    right.download_button(
        "Download Modelfile (Ollama)",
        data=(out / "Modelfile").read_text(),
        file_name="Modelfile",
        mime="text/plain",
        on_click="ignore",
    )
    st.markdown(f"Ollama, in the folder of both files: `{modelfile.create_command(name)}`, then `ollama run {name}`")
    st.caption(f"Also on disk: `{out}` (with HOW_TO_LOAD.md)")
    if ui.ollama_here() and st.button(f"Create `{name}` in the Ollama on this computer"):
        with st.spinner("ollama create..."):
            said = ui.ollama_create(out, name)
        (st.success if said.startswith("Created") else st.error)(said)
    asked = st.text_input("Answer a prompt with the exported file", "Create a high priority task: Review Q4 budget")
    if st.button("Answer with the GGUF file"):
        with st.spinner("Loading the GGUF through transformers and answering (a minute on a CPU)..."):
            got, error = ui.call("engine.gguf_file", gguf, "--prompt", asked, "--json", user=user)
        if error:
            st.error(error)
        else:
            st.code(got["answers"]["gguf"], language=None, wrap_lines=True)
            st.caption(f"greedy · {got['seconds']} s · from `{gguf.name}`")
st.caption(
    "From a shell: `" + ui.shell("engine.export", *[a for a in export_args if a not in ("--zip", "--json")]) + "`"
)
