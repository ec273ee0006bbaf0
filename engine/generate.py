"""Answers from a run's result and from the model it started from, with the model's chat template applied.

    python -m engine.generate --run RUN_DIR --prompt "Create a high priority task: Review Q4 budget"
    python -m engine.generate --run RUN_DIR --prompt "..." --both --json     # base and fine-tuned, one model load
    python -m engine.generate --run RUN_DIR --prompt "..." --base --sample --temperature 0.7
    python -m engine.generate --model embedded --prompt "..."               # any model directory, no run

One process per request: loading the 135M model takes ~3-5 s on a CPU, and a LoRA run needs only one load for both
answers (the adapter is switched off for the base answer). Exit codes: 0 answered, 2 a run, model or prompt that
cannot be used (the message says why).
"""

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from engine import access, models, rundir, users
from engine.runs import sidejobs
from engine.spec import RunSpec, SpecError

MAX_NEW_TOKENS = 96  # a Task API answer is ~30 tokens; room for a sentence or two from a chattier model


def set_threads() -> int:
    """Torch threads for inference. OpenMP threads spin at every barrier; when other processes already hold the
    cores, a second thread makes each small decoding step far slower (measured on 2 shared cores at load 6:
    30 new tokens took 57 s with 2 threads, 7 s with 1). OMP_NUM_THREADS, when set, wins."""
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        cores = os.cpu_count() or 1
        torch.set_num_threads(1 if os.getloadavg()[0] >= cores else cores)
    return torch.get_num_threads()


class ResultError(ValueError):
    """A run (or model) that has no usable result; the message is for a person."""


def finished_run(run_dir, verb: str = "use") -> tuple[RunSpec, Path]:
    """(spec, final/) of a completed run, or ResultError with a sentence saying what to do. No torch."""
    run = Path(run_dir).expanduser()
    if not (run / "config.yaml").is_file():
        raise ResultError(
            f"{run} is not a run directory (it has no config.yaml). Give the directory of a run; "
            "the Runs page and `python -m engine.runs list` show them."
        )
    status = rundir.read_status(run)
    state = status.get("state", "unknown")
    if state in ("queued", "running"):
        step = f" (step {status.get('step', 0)} of {status.get('max_steps', '?')})" if state == "running" else ""
        raise ResultError(
            f"Run {run.name} is still {state}{step}, so there is no result to {verb} yet. "
            "Wait until it has finished, then try again."
        )
    if state == "failed":
        raise ResultError(
            f"Run {run.name} failed ({status.get('error') or 'no reason recorded'}), so there is no "
            f"result to {verb}. Fix the cause and start a new run, or resume it on the Runs page."
        )
    if state == "stopped":
        raise ResultError(
            f"Run {run.name} was stopped before it finished, so it has no final model to {verb}. "
            "Resume it on the Runs page to finish it."
        )
    final = run / "final"
    if not (final / "config.json").is_file() and not (final / "adapter_config.json").is_file():
        raise ResultError(
            f"Run {run.name} has no model in final/ (state: {state}), so there is nothing to {verb}. "
            "Start the run again."
        )
    try:
        return RunSpec.load(run / "config.yaml"), final
    except SpecError as e:
        raise ResultError(f"Run {run.name}: {e}") from None


def base_path(spec: RunSpec, run_dir: Path) -> str:
    """The weights the run started from (the model it was fine-tuned from, adapters of earlier stages merged)."""
    if spec.init_from:
        merged = Path(run_dir) / "init_model"
        if (merged / "config.json").is_file():
            return str(merged)
        earlier = Path(spec.init_from).expanduser() / "final"
        if (earlier / "config.json").is_file():
            return str(earlier)
        raise ResultError(
            f"The model run {Path(run_dir).name} started from ({spec.init_from}) is gone; "
            "without it the base answers cannot be produced."
        )
    try:
        return models.resolve(spec.model_name_or_path)
    except models.ModelError as e:
        raise ResultError(str(e)) from None


class Loaded:
    """A run's model and its base, loaded once, for generation and log-probs (engine.evaluate uses it too)."""

    def __init__(self, run_dir=None, model: str = "", need_base: bool = True, need_tuned: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        set_threads()
        self.adapter = False
        self._base = self._tuned = None
        if run_dir is None:  # a plain model directory: it is "the base"
            path = models.resolve(model or models.EMBEDDED)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self._base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        else:
            spec, final = finished_run(run_dir, "try")
            if spec.stage == "rm":
                raise ResultError(
                    "This run trained a reward model: it scores answers and does not write them. "
                    "Evaluate it instead (preference accuracy), or try the policy it scores."
                )
            self.tokenizer = AutoTokenizer.from_pretrained(final)
            self.adapter = (final / "adapter_config.json").is_file()
            if self.adapter:
                from peft import PeftModel

                base = AutoModelForCausalLM.from_pretrained(base_path(spec, run_dir), dtype=torch.float32)
                self._tuned = PeftModel.from_pretrained(base, str(final)).eval()
            else:
                if need_tuned:
                    self._tuned = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
                if need_base:
                    self._base = AutoModelForCausalLM.from_pretrained(
                        base_path(spec, run_dir), dtype=torch.float32
                    ).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        any_model = self._tuned if self._tuned is not None else self._base
        self.context = int(getattr(any_model.config, "max_position_embeddings", 0) or 2048)

    @contextmanager
    def model(self, which: str):
        """`with loaded.model("base") as m:` the base (a LoRA adapter is switched off meanwhile) or "tuned"."""
        if which == "tuned":
            yield self._tuned
        elif self.adapter:
            with self._tuned.disable_adapter():
                yield self._tuned
        else:
            yield self._base

    def chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        return "\n".join(m["content"] for m in messages) + ("\n" if add_generation_prompt else "")

    def check_length(self, text: str, max_new_tokens: int) -> int:
        n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if n + max_new_tokens > self.context:
            raise ResultError(
                f"The prompt is {n:,} tokens with the chat template; this model reads at most "
                f"{self.context:,} tokens, including the {max_new_tokens} it may write. Shorten the "
                f"prompt by at least {n + max_new_tokens - self.context:,} tokens."
            )
        return n

    def generate(
        self,
        prompts: list,
        which: str = "tuned",
        sample: bool = False,
        temperature: float = 0.7,
        max_new_tokens: int = MAX_NEW_TOKENS,
        batch_size: int = 16,
    ) -> list[str]:
        """Answers to prompts (a str, or a list of chat messages each), in order."""
        import torch

        texts = [self.chat([{"role": "user", "content": p}] if isinstance(p, str) else p) for p in prompts]
        for text in texts:
            self.check_length(text, max_new_tokens)
        options = dict(do_sample=True, temperature=temperature, top_p=0.95) if sample else dict(do_sample=False)
        answers = []
        with self.model(which) as model, torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer(
                    texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
                )
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **options
                )
                new = out[:, enc["input_ids"].shape[1] :]
                answers += [a.strip() for a in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a finished run directory")
    p.add_argument("--model", default="", help="a model directory (or 'embedded') to answer with, instead of a run")
    p.add_argument("--prompt", required=True)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--base", action="store_true", help="answer with the model the run started from")
    which.add_argument("--both", action="store_true", help="answer with the base and the fine-tuned model")
    p.add_argument("--sample", action="store_true", help="sampled decoding (default: greedy, always the same)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--json", action="store_true")
    p.add_argument("--as", dest="acting", metavar="NAME", help="act as this workshop account (its paths only)")
    a = p.parse_args(argv)
    if not a.run and not a.model:
        p.error("give --run RUN_DIR or --model DIR")
    if not 0 < a.temperature <= 5 or not 0 < a.max_new_tokens <= 4096:
        return _fail("temperature must be in (0, 5] and --max-new-tokens in 1..4096.")
    if not a.prompt.strip():
        return _fail("The prompt is empty; type a request for the model.")
    try:
        actor = users.acting(a.acting)
        a.run = a.run and str(access.check_run_dir(a.run, actor))
        a.model = a.model and access.check_model(a.model, actor)
        if a.run:
            finished_run(a.run, "try")  # a sentence before the slow imports
        started = time.time()
        with sidejobs.one_at_a_time(actor, f"an answer from {Path(a.run or a.model).name or 'a model'}"):
            loaded = Loaded(a.run, a.model, need_base=a.base or a.both or not a.run, need_tuned=not a.base)
            wanted = ["base"] if a.base or not a.run else ["base", "tuned"] if a.both else ["tuned"]
            answers = {w: loaded.generate([a.prompt], w, a.sample, a.temperature, a.max_new_tokens)[0] for w in wanted}
    except (ResultError, models.ModelError, access.AccessError, users.AuthError, sidejobs.Busy) as e:
        return _fail(str(e))
    result = {
        "prompt": a.prompt,
        "answers": answers,
        "sample": a.sample,
        "temperature": a.temperature if a.sample else None,
        "seconds": round(time.time() - started, 2),
    }
    if a.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for name, text in answers.items():
            print(f"--- {name}\n{text}")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
