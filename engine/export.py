"""Take a finished run away: the LoRA adapter as it is, or a merged full model, each with its tokenizer.

    python -m engine.export RUN_DIR --out ~/task-api-adapter             # adapter: PeftModel.from_pretrained
    python -m engine.export RUN_DIR --merge --out ~/task-api-model --zip # AutoModelForCausalLM.from_pretrained

The export is written to a hidden directory beside --out and renamed at the end, so DIR either holds a whole
export or does not exist: any failure (a full disk included) removes what was written. --zip also writes DIR.zip.
A run trained with method=full already is a full model; --merge changes nothing for it.
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

from engine import access, users
from engine.generate import ResultError, base_path, finished_run

SKIPPED = {"training_args.bin"}  # a pickle of the trainer's settings: not needed to load, and unsafe to unpickle
LOAD_NOTE = {
    "adapter": """# LoRA adapter exported by Tunewise

Base model: `{base}`

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

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/DIRECTORY")
tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIRECTORY")
```
""",
}


class ExportError(ValueError):
    """An export that cannot start; the message is for a person."""


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not empty. Choose a new --out directory, or delete it "
                          "first; an export never writes over other files.")


def _write_adapter(final: Path, tmp: Path, spec, run_dir: Path) -> str:
    for f in final.iterdir():
        if f.is_file() and f.name not in SKIPPED:
            shutil.copy2(f, tmp / f.name)
    if (final / "adapter_config.json").is_file():
        base = json.loads((final / "adapter_config.json").read_text()).get("base_model_name_or_path") or "?"
        (tmp / "HOW_TO_LOAD.md").write_text(LOAD_NOTE["adapter"].format(base=base))
        return "adapter"
    (tmp / "HOW_TO_LOAD.md").write_text(LOAD_NOTE["merged"])
    return "full"


def _write_merged(final: Path, tmp: Path, spec, run_dir: Path) -> str:
    if not (final / "adapter_config.json").is_file():
        return _write_adapter(final, tmp, spec, run_dir)  # method=full: the model is whole already
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    # The base is loaded in full precision even after QLoRA: folding an adapter into 4-bit weights loses accuracy.
    base = AutoModelForCausalLM.from_pretrained(base_path(spec, run_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
    model.save_pretrained(tmp)  # safetensors is transformers' default
    AutoTokenizer.from_pretrained(final).save_pretrained(tmp)
    (tmp / "HOW_TO_LOAD.md").write_text(LOAD_NOTE["merged"])
    return "merged"


def _zip(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():  # weights hardly compress and deflating 500 MB costs a minute on a CPU: store them
                kind = zipfile.ZIP_STORED if f.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
                z.write(f, Path(folder.name) / f.relative_to(folder), compress_type=kind)


def export(run_dir, out, merge: bool = False, make_zip: bool = False) -> dict:
    """Write the export to `out` (and `out`.zip); all or nothing. Raises ResultError/ExportError for a person."""
    spec, final = finished_run(run_dir, "export")
    out = Path(out).expanduser().resolve()
    _check_out(out)
    started = time.time()
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    zip_path, zip_tmp = out.with_name(out.name + ".zip"), out.with_name(f".{out.name}.zip.partial-{os.getpid()}")
    created = False
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
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
            raise ExportError(f"The disk holding {out.parent} filled up while writing the export ({free / 2**20:,.0f} "
                              f"MiB free now; a merged model needs about {_size(final) * (1 if not merge else 4) / 2**20:,.0f}"
                              " MiB or more). Nothing was left behind. Free some space, or choose --out on another "
                              "disk.") from None
        if isinstance(e, PermissionError):
            raise ExportError(f"Cannot write to {out.parent} ({e.strerror}). Choose an --out directory you can "
                              "write to. Nothing was left behind.") from None
        raise
    return {"out": str(out), "zip": str(zip_path) if make_zip else None, "kind": kind, "bytes": _size(out),
            "seconds": round(time.time() - started, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="a new directory for the export")
    p.add_argument("--merge", action="store_true", help="fold the LoRA adapter into the base: one full model")
    p.add_argument("--zip", action="store_true", help="also write OUT.zip, for a download")
    p.add_argument("--json", action="store_true")
    p.add_argument("--as", dest="acting", metavar="NAME", help="act as this workshop account (its paths only)")
    a = p.parse_args(argv)
    try:
        actor = users.acting(a.acting)
        a.run_dir = access.check_run_dir(a.run_dir, actor)
        a.out = access.confine(a.out, actor, "export folder", writable=True)
        result = export(a.run_dir, a.out, a.merge, a.zip)
    except (ResultError, ExportError, access.AccessError, users.AuthError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  partial output is already removed; say what happened
        print(f"error: the export failed ({type(e).__name__}: {e}); nothing was left in {a.out}.", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(result))
    else:
        print(f"exported the {result['kind']} ({result['bytes'] / 2**20:,.1f} MiB) to {result['out']}"
              + (f" and {result['zip']}" if result["zip"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
