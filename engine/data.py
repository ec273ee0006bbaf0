"""Datasets: the bundled sets, layout detection per stage, validation with line numbers, conversion to TRL layouts.

    python -m engine.data check engine/assets/datasets/task_api/train.jsonl --stage sft
    python -m engine.data check my.csv --stage dpo --json            # exit 0 usable, 1 not, 2 usage error
    python -m engine.data stats my.jsonl --stage sft --max-length 512 --json   # token lengths (needs transformers)

What each stage gets (TRL's standard layouts, conversational where there is a chat):
    pt   {"text": str}
    sft  {"prompt": [user msg], "completion": [assistant msg]}   or   {"messages": [...]} passed through
    dpo, rm  {"prompt": [msgs], "chosen": [assistant msg], "rejected": [assistant msg]}
    rl   {"prompt": [user msg], ...extra columns kept, TRL hands them to reward functions}
"""

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import paths
from engine.datafile import DataError, read_records
from engine.datalayouts import LAYOUTS, STAGES, convert_row, detect_layout, guidance

__all__ = ["DataError", "bundled", "load_for_stage", "check", "as_dataset", "CheckReport", "guidance", "LAYOUTS"]

DATASETS = paths.ASSETS / "datasets"
BUNDLED = {
    "pt": "pretrain_text",
    "sft": "task_api",
    "dpo": "task_preferences",
    "rm": "task_preferences",
    "rl": "task_prompts",
}
BUNDLED_ABOUT = {
    "pt": "600 paragraphs about task management and planning (raw text), written for Tunewise.",
    "sft": "2,400 Task API requests answered with exact JSON ({title, priority, status}), the lesson's example.",
    "dpo": "1,200 task requests, each with the exact JSON (chosen) and a plausible worse answer (rejected).",
    "rm": "1,200 task requests, each with the exact JSON (chosen) and a plausible worse answer (rejected).",
    "rl": "1,000 task requests (prompts only) with the expected JSON for the reward function.",
}
MAX_REPORTED = 20  # problems listed one by one; the rest are counted


def bundled(stage: str, split: str = "train") -> Path:
    """The bundled file for a stage ("pt", "sft", "dpo", "rm", "rl") and split ("train", "test")."""
    if stage not in BUNDLED:
        raise DataError(f"Unknown stage '{stage}'. Choose one of: {', '.join(BUNDLED)}.")
    if split not in ("train", "test"):
        raise DataError(f"Unknown split '{split}'. Choose 'train' or 'test'.")
    return DATASETS / BUNDLED[stage] / f"{split}.jsonl"


def uploads_folder(owner: str = "") -> Path:
    return (paths.user_area(owner) if owner else paths.home()) / "uploads"


def uploads(owner: str = "") -> list[dict]:
    """The files a person uploaded (owner "": personal mode's), newest first: name, path, bytes, modified."""
    folder = uploads_folder(owner)
    found = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    rows = [{"name": p.name, "path": p, "bytes": p.stat().st_size, "modified": p.stat().st_mtime} for p in found]
    return sorted(rows, key=lambda r: -r["modified"])


def save_upload(name: str, data: bytes, owner: str = "") -> Path:
    """Keep an uploaded file under TUNEWISE_HOME/uploads (a workshop user's: users/NAME/uploads); the content hash
    in the name keeps versions apart. Only the name's last part is kept, so a name with folders in it cannot
    place the file anywhere else. A workshop student keeps at most uploads_mb() in all: a new file past that is
    refused with what to remove (remove_upload)."""
    import fcntl
    import hashlib
    import re

    from engine.datafile import max_upload_mb, uploads_mb

    if len(data) > max_upload_mb() * 2**20:
        raise DataError(
            f"{Path(name).name} is {len(data) / 2**20:,.1f} MB, over this server's upload limit of "
            f"{max_upload_mb():,.0f} MB. Upload a smaller file (a sample of the rows is enough to check)."
        )
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name.replace("\\", "/")).name).strip("._")[-120:] or "upload.jsonl"
    folder = uploads_folder(owner)
    target = folder / f"{hashlib.sha256(data).hexdigest()[:10]}_{safe}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".uploads.lock", "w") as lock:  # tabs uploading at once are counted one by one
        fcntl.flock(lock, fcntl.LOCK_EX)
        if owner and not target.is_file():
            kept = sum(u["bytes"] for u in uploads(owner))
            if kept + len(data) > uploads_mb() * 2**20:
                raise DataError(
                    f"Your uploads already take {kept / 2**20:,.1f} MB of the {uploads_mb():,.0f} MB each student "
                    f"may keep, and {Path(name).name} is {len(data) / 2**20:,.1f} MB. Remove files you no longer "
                    "need under 'Your uploads' on the Data page, then upload it again."
                )
        if not target.is_file():
            target.write_bytes(data)
    return target


def remove_upload(name: str, owner: str = "") -> None:
    """Delete one of a person's uploads, by its file name; refused while one of their runs waits or trains on it."""
    from engine.runs.registry import connect

    folder = uploads_folder(owner)
    target = folder / Path(name).name
    if Path(name).name != name or not target.is_file() or target.resolve().parent != folder.resolve():
        raise DataError(f"There is no upload '{name}' of yours. The Data page lists your uploads.")
    active = connect().execute(
        "SELECT id, config FROM runs WHERE owner=? AND state IN ('preparing', 'queued', 'running', 'waiting')",
        (owner or _personal_owner(),),
    )
    using = [r["id"] for r in active if str(target) in (r["config"] or "")]
    if using:
        raise DataError(
            f"Run {', '.join(map(str, using))} will train on {name}; remove it once the run has finished (or stop "
            "the run first)."
        )
    target.unlink()


def _personal_owner() -> str:
    from engine.users import OWNER

    return OWNER.name


@dataclass
class CheckReport:
    path: str
    stage: str
    ok: bool = False
    format: str = ""  # the layout recognised, e.g. "input → output"
    file_format: str = ""  # JSONL | JSON | CSV | Parquet | text
    rows: int = 0  # usable rows
    errors: list = field(default_factory=list)  # first MAX_REPORTED of {"line": N | None, "message": str}
    warnings: list = field(default_factory=list)
    error_count: int = 0
    warning_count: int = 0

    def error(self, line, message):
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append({"line": line, "message": message})

    def warn(self, line, message):
        self.warning_count += 1
        if len(self.warnings) < MAX_REPORTED:
            self.warnings.append({"line": line, "message": message})

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.ok:
            return f"{Path(self.path).name}: usable for {self.stage}, {self.rows:,} rows, layout {self.format}."
        first = self.errors[0] if self.errors else {"line": None, "message": "no usable rows."}
        where = f"line {first['line']}: " if first["line"] else ""
        more = f" ({self.error_count - 1:,} more problems)" if self.error_count > 1 else ""
        return f"{Path(self.path).name} cannot be used for {self.stage}: {where}{first['message']}{more}"


def _validate(path, stage: str) -> tuple[CheckReport, list[dict]]:
    report, rows = CheckReport(path=str(path), stage=stage), []
    if stage not in STAGES:
        report.error(None, f"Unknown stage '{stage}'. Choose one of: {', '.join(STAGES)}.")
        return report, rows
    try:
        data = read_records(Path(path))
    except DataError as e:
        report.error(e.line, str(e))
        return report, rows
    report.file_format = data.file_format
    for line, message in data.notes:
        report.warn(line, message)
    for line, message in data.line_errors:
        report.error(line, message)
    if data.file_format == "text" and stage != "pt":
        report.error(
            None,
            f"a plain-text file is raw text, which only continued pretraining (pt) uses. For {stage} "
            "give JSONL, JSON, CSV or Parquet with the fields listed below.",
        )
        return report, rows
    records = data.records
    layout, hint = detect_layout(stage, [r for _, r in records[:1000]])
    if layout is None:
        report.error(None, hint)
        return report, rows
    report.format = layout.name
    seen, ignored = {}, set()
    for index, (line, record) in enumerate(records, start=1):
        where = line if line else None
        prefix = "" if line else f"row {index}: "
        if not isinstance(record, dict):
            report.error(
                where,
                f"{prefix}expected an object with fields ({', '.join(layout.fields)}), found {type(record).__name__}.",
            )
            continue
        problems, row = convert_row(layout, record, stage)
        for message in problems:
            report.error(where, prefix + message)
        if problems:
            continue
        ignored.update(set(record) - set(layout.fields) - set(row))
        key = repr(row)  # rows are built by convert_row with a fixed key order; repr is ~4x faster than json.dumps
        if key in seen:
            report.warn(
                where,
                f"{prefix}repeats line {seen[key]} exactly. Duplicates weigh an example twice; "
                "delete one unless that is what you want.",
            )
        else:
            seen[key] = line or f"row {index}"
        rows.append(row)
    report.rows = len(rows)
    if layout.converted:
        report.warn(None, f"Converted the {layout.name} fields to the standard {layout.target} layout.")
    if ignored:
        report.warn(None, f"Ignored columns that {stage} does not use: {', '.join(sorted(ignored))}.")
    if not records and not data.line_errors:
        report.error(None, "the file holds no examples.")
    note = guidance(stage, len(rows))
    if rows and note["level"] == "low":
        report.warn(None, note["message"])
    report.ok = report.error_count == 0 and bool(rows)
    return report, rows


def check(path, stage: str) -> CheckReport:
    """Validate a file for a stage; never raises for a bad file, the report says what is wrong."""
    return _validate(path, stage)[0]


def load_for_stage(path, stage: str) -> list[dict]:
    """Rows in the stage's standard TRL layout (see the module docstring). Raises DataError if unusable."""
    report, rows = _validate(path, stage)
    if not report.ok:
        raise DataError(
            report.summary() + f" See all problems with: python -m engine.data check {path} --stage {stage}"
        )
    return rows


def as_dataset(path, stage: str):
    """The same rows as a `datasets.Dataset` (imports `datasets`: trainer processes only)."""
    from datasets import Dataset

    return Dataset.from_list(load_for_stage(path, stage))


def _print_report(report: CheckReport) -> None:
    print(report.summary())
    for kind, items, count in (
        ("error", report.errors, report.error_count),
        ("warning", report.warnings, report.warning_count),
    ):
        for item in items:
            print(f"  {kind}: " + (f"line {item['line']}: " if item["line"] else "") + item["message"])
        if count > len(items):
            print(f"  ... and {count - len(items):,} more {kind}s like these.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, what in (("check", "validate a data file for a stage"), ("stats", "token lengths and loss mask")):
        p = sub.add_parser(name, help=what)
        p.add_argument("file", type=Path)
        p.add_argument("--stage", required=True, choices=STAGES)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "stats":
            p.add_argument("--max-length", type=int, default=512, help="tokens per example before truncation")
            p.add_argument("--examples", type=int, default=3, help="rendered examples to return")
            p.add_argument("--model", default="embedded", help="model directory whose tokenizer to use")
        p.add_argument("--as", dest="acting", metavar="NAME", help="act as this workshop account (its paths only)")
    args = parser.parse_args(argv)
    from engine import access, users

    try:
        actor = users.acting(args.acting)
        args.file = access.confine(args.file, actor, "data file")
        if args.command == "stats":
            args.model = access.check_model(args.model, actor)
    except (access.AccessError, users.AuthError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.file.is_file():
        print(f"error: {args.file} does not exist or is not a file.", file=sys.stderr)
        return 2
    try:
        if args.command == "stats":
            from engine.datastats import token_stats

            result = token_stats(args.file, args.stage, args.max_length, args.examples, args.model)
            print(json.dumps(result) if args.json else json.dumps(result, indent=1)[:4000])
            return 0 if result.get("ok") else 1
        report = check(args.file, args.stage)
    except Exception as e:  # noqa: BLE001 - the promise is: a sentence, never a traceback
        _log_traceback()
        print(
            f"error: unexpected problem with {args.file}: {e}. Details are in {paths.home() / 'logs' / 'data.log'}.",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(report.to_dict(), ensure_ascii=False) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        _print_report(report)
    return 0 if report.ok else 1


def _log_traceback() -> None:
    import traceback

    try:
        log = paths.home() / "logs" / "data.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            traceback.print_exc(file=f)
    except OSError:
        pass


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head` closed the pipe; not an error worth a traceback
        sys.exit(0)
