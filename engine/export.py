"""Take a finished run away: the LoRA adapter as it is, or a merged full model, each with its tokenizer.

    python -m engine.export RUN_DIR --out ~/task-api-adapter             # adapter: PeftModel.from_pretrained
    python -m engine.export RUN_DIR --merge --out ~/task-api-model --zip # AutoModelForCausalLM.from_pretrained
    python -m engine.export RUN_DIR --gguf --quant q8_0 --out ~/task-api-gguf  # llama.cpp, Ollama, LM Studio

The export is written to a hidden directory beside --out and renamed at the end, so DIR either holds a whole
export or does not exist: any failure (a full disk included) removes what was written. --zip also writes DIR.zip.
A run trained with method=full already is a full model; --merge changes nothing for it.
--gguf merges a LoRA adapter first, then writes one GGUF file (engine/gguf_file.py: f16, bf16, q8_0; q4_k_m when
llama.cpp's llama-quantize is on PATH), an Ollama Modelfile (engine/modelfile.py) and HOW_TO_LOAD.md.
Exit codes: 0 exported; 2 the run or --out cannot be used (the message says why); 1 the export failed.
"""

import argparse
import errno
import json
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

from engine import access, models, users
from engine.generate import ResultError, base_path, finished_run
from engine.runs import sidejobs
from engine.spec import RunSpec, SpecError

SKIPPED = {"training_args.bin"}  # a pickle of the trainer's settings: not needed to load, and unsafe to unpickle
LOAD_NOTE = {
    "adapter": """# LoRA adapter exported by Tunewise

{base_line}

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "PATH/TO/THIS/DIRECTORY")
tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIRECTORY")
```
`model.merge_and_unload()` folds the adapter into the base weights.
""",
    "merged": """# Full model exported by Tunewise (safetensors, with its tokenizer and chat template)

{base_line}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/DIRECTORY")
tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIRECTORY")
```
""",
    "gguf": """# GGUF exported by Tunewise ({quant}: llama.cpp, Ollama, LM Studio)

{base_line} The file `{file}` holds the weights ({quant}), the tokenizer and the chat template.

- **Ollama**: in this directory, `{ollama}`, then `ollama run {name}` (the Modelfile has the chat template and
  the stop tokens){ollama_note}
- **llama.cpp**: `llama-cli -m {file} -cnv` (the chat template comes from the file), or `llama-server -m {file}`
- **LM Studio**: copy `{file}` into its models folder (`lms import {file}`)
- **transformers** (dequantizes to float32):

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/DIRECTORY", gguf_file="{file}")
tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIRECTORY", gguf_file="{file}")
```
""",
}


class ExportError(ValueError):
    """An export that cannot start; the message is for a person."""


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(
            f"{out} already exists and is not empty. Choose a new --out directory, or delete it "
            "first; an export never writes over other files."
        )


def base_names(spec, run_dir: Path) -> tuple[str | None, str]:
    """(the public Hub id the run's model came from, or None for a local model; the weights on this machine)."""
    root, seen = spec, 0
    while root.init_from and seen < 8:  # a stage started from an earlier run: its model is the root's
        try:
            root, seen = RunSpec.load(Path(root.init_from).expanduser() / "config.yaml"), seen + 1
        except SpecError:
            break
    model = root.model_name_or_path
    if models.is_embedded(model):
        public = f"HuggingFaceTB/{models.EMBEDDED_NAME}"
    else:
        public = None if Path(model).expanduser().exists() or model.startswith(("/", ".", "~")) else model
    try:
        local = base_path(spec, run_dir)
    except ResultError:
        local = "?"
    return public, local


def _base_line(spec, run_dir: Path, adapter: bool) -> str:
    public, local = base_names(spec, run_dir)
    verb = "Base model" if adapter else "Fine-tuned from"
    earlier = (
        f" This run started from the result of an earlier run ({Path(spec.init_from).name}), so the "
        "adapter applies on that merged model, not on the public one alone."
        if spec.init_from
        else ""
    )
    if public:
        return f"{verb}: `{public}` (Hugging Face Hub); on the machine that trained it: `{local}`.{earlier}"
    return f"{verb}: `{local}` (a local model; copy it along).{earlier}"


def _write_adapter(final: Path, tmp: Path, spec, run_dir: Path) -> str:
    for f in final.iterdir():
        if f.is_file() and f.name not in SKIPPED:
            shutil.copy2(f, tmp / f.name)
    if (final / "adapter_config.json").is_file():
        public, local = base_names(spec, run_dir)
        (tmp / "HOW_TO_LOAD.md").write_text(
            LOAD_NOTE["adapter"].format(base=public or local, base_line=_base_line(spec, run_dir, adapter=True))
        )
        return "adapter"
    (tmp / "HOW_TO_LOAD.md").write_text(LOAD_NOTE["merged"].format(base_line=_base_line(spec, run_dir, False)))
    return "full"


def _merge_into(final: Path, target: Path, spec, run_dir: Path) -> None:
    """The adapter folded into the base weights, saved as a full model with the run's tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The base is loaded in full precision even after QLoRA: folding an adapter into 4-bit weights loses accuracy.
    base = AutoModelForCausalLM.from_pretrained(base_path(spec, run_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
    model.save_pretrained(target)  # safetensors is transformers' default
    AutoTokenizer.from_pretrained(final).save_pretrained(target)


def _write_merged(final: Path, tmp: Path, spec, run_dir: Path) -> str:
    if not (final / "adapter_config.json").is_file():
        return _write_adapter(final, tmp, spec, run_dir)  # method=full: the model is whole already
    _merge_into(final, tmp, spec, run_dir)
    (tmp / "HOW_TO_LOAD.md").write_text(LOAD_NOTE["merged"].format(base_line=_base_line(spec, run_dir, False)))
    return "merged"


def _write_gguf(final: Path, tmp: Path, spec, run_dir: Path, quant: str) -> str:
    from engine import gguf_file, modelfile

    adapter = (final / "adapter_config.json").is_file()
    base = Path(base_path(spec, run_dir))
    if not adapter or (base / "config.json").is_file():  # refuse an unmapped family before any slow merge
        gguf_file.check_supported(final if not adapter else base, tokenizer_dir=final)
    source = tmp / ".merged" if adapter else final
    if adapter:
        _merge_into(final, source, spec, run_dir)
    name = Path(run_dir).name
    file = f"{name}-{quant}.gguf"
    gguf_file.write(source, tmp / file, quant, name, pre=_pre_tokenizer(spec, run_dir))
    from transformers import AutoTokenizer

    text, note = modelfile.modelfile(file, AutoTokenizer.from_pretrained(source))
    (tmp / "Modelfile").write_text(text)
    if adapter:
        shutil.rmtree(source)
    ollama_name = modelfile.ollama_name(name)
    (tmp / "HOW_TO_LOAD.md").write_text(
        LOAD_NOTE["gguf"].format(
            quant=quant.upper(),
            file=file,
            name=ollama_name,
            ollama=modelfile.create_command(ollama_name),
            ollama_note=f". {note}" if note else "",
            base_line=_base_line(spec, run_dir, adapter=False),
        )
    )
    return "gguf"


def _pre_tokenizer(spec, run_dir: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (its convert script finds it by a hash of encoded text):
    the embedded model's own GGUF says it for SmolLM2; anything else gets llama.cpp's "default" split."""
    if base_names(spec, run_dir)[0] == f"HuggingFaceTB/{models.EMBEDDED_NAME}":
        import gguf

        field = gguf.GGUFReader(models.gguf_path()).fields.get("tokenizer.ggml.pre")
        return field.contents() if field is not None else "default"
    return "default"


def _zip(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():  # weights hardly compress and deflating 500 MB costs a minute on a CPU: store them
                kind = zipfile.ZIP_STORED if f.suffix in (".safetensors", ".gguf") else zipfile.ZIP_DEFLATED
                z.write(f, Path(folder.name) / f.relative_to(folder), compress_type=kind)


def export(run_dir, out, merge: bool = False, make_zip: bool = False, gguf: str | None = None) -> dict:
    """Write the export to `out` (and `out`.zip); all or nothing. gguf: a quant (f16, bf16, q8_0, ...) to write a
    GGUF file + Modelfile instead of safetensors. Raises ResultError/ExportError for a person."""
    from engine import gguf_file

    spec, final = finished_run(run_dir, "export")
    out = Path(out).expanduser().resolve()
    _check_out(out)
    if gguf is not None and gguf not in gguf_file.quant_choices():
        raise ExportError(gguf_file.unknown_quant(gguf))
    started = time.time()
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    zip_path, zip_tmp = out.with_name(out.name + ".zip"), out.with_name(f".{out.name}.zip.partial-{os.getpid()}")
    created = False
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if gguf is not None:
            kind = _write_gguf(final, tmp, spec, Path(run_dir), gguf)
        else:
            kind = (_write_merged if merge else _write_adapter)(final, tmp, spec, Path(run_dir))
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.rename(tmp, out)
        created = True
        if make_zip:
            _zip(out, zip_tmp)
            os.replace(zip_tmp, zip_path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        zip_tmp.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            free = shutil.disk_usage(out.parent).free if out.parent.exists() else 0
            raise ExportError(
                f"The disk holding {out.parent} filled up while writing the export ({free / 2**20:,.0f} "
                f"MiB free now; a merged model needs about {_size(final) * (1 if not merge else 4) / 2**20:,.0f}"
                " MiB or more). Nothing was left behind. Free some space, or choose --out on another "
                "disk."
            ) from None
        if isinstance(e, gguf_file.GGUFError):
            raise ExportError(str(e)) from None
        if isinstance(e, PermissionError):
            raise ExportError(
                f"Cannot write to {out.parent} ({e.strerror}). Choose an --out directory you can "
                "write to. Nothing was left behind."
            ) from None
        raise
    files = sorted(out.glob("*.gguf"))
    return {
        "out": str(out),
        "zip": str(zip_path) if make_zip else None,
        "kind": kind,
        "bytes": _size(out),
        "seconds": round(time.time() - started, 1),
        "gguf": str(files[0]) if files else None,
        "quant": gguf,
        "ollama": _ollama_line(out, Path(run_dir).name) if files else None,
    }


def _ollama_line(out: Path, run_name: str) -> str:
    from engine import modelfile

    return f"cd {out} && {modelfile.create_command(modelfile.ollama_name(run_name))}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="a new directory for the export")
    p.add_argument("--merge", action="store_true", help="fold the LoRA adapter into the base: one full model")
    p.add_argument("--zip", action="store_true", help="also write OUT.zip, for a download")
    p.add_argument("--gguf", action="store_true", help="one GGUF file (llama.cpp, Ollama, LM Studio) + Modelfile")
    p.add_argument(
        "--quant",
        default="q8_0",
        help="GGUF weights: f16, bf16, q8_0 (default; half of f16's size), "
        "q4_k_m when llama.cpp's llama-quantize is on PATH",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--as", dest="acting", metavar="NAME", help="act as this workshop account (its paths only)")
    a = p.parse_args(argv)
    try:
        actor = users.acting(a.acting)
        a.run_dir = access.check_run_dir(a.run_dir, actor)
        a.out = access.confine(a.out, actor, "export folder", writable=True)
        with sidejobs.one_at_a_time(actor, f"an export of {a.run_dir.name}"):
            result = export(a.run_dir, a.out, a.merge, a.zip, gguf=a.quant.lower() if a.gguf else None)
    except (ResultError, ExportError, access.AccessError, users.AuthError, sidejobs.Busy) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  partial output is already removed; say what happened
        print(f"error: the export failed ({type(e).__name__}: {e}); nothing was left in {a.out}.", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(result))
    else:
        print(
            f"exported the {result['kind']} ({result['bytes'] / 2**20:,.1f} MiB) to {result['out']}"
            + (f" and {result['zip']}" if result["zip"] else "")
        )
        if result["ollama"]:
            print(f"Ollama: {result['ollama']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
