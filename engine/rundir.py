"""The run directory: the protocol between the UI and a trainer process. No torch here; both sides import it.

RUN/config.yaml     what was asked (a RunSpec)
RUN/status.json     {"state": queued|running|completed|failed|stopped, "step", "max_steps", "error", ...}
RUN/metrics.jsonl   one JSON object per logged step: step, loss, learning_rate, epoch, ... (append-only)
RUN/train.log       the trainer's stdout and stderr
RUN/command.txt     the exact command that was started (re-run it from a shell)
RUN/checkpoint-N/   Trainer checkpoints (resume from the last one)
RUN/final/          the result: a PEFT adapter, or a full model for method=full
"""

import json
import os
import time
from pathlib import Path

STATES = ("waiting", "queued", "running", "completed", "failed", "stopped")  # waiting: a pipeline's later stage
FINISHED = ("completed", "failed", "stopped")


def write_status(run_dir: Path, state: str, **fields) -> dict:
    """Rewrite status.json atomically (temp file + rename), keeping fields set earlier."""
    assert state in STATES, state
    status = read_status(run_dir)
    status.update(fields, state=state, updated_at=time.time())
    tmp = Path(run_dir) / f".status.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(status))
    os.replace(tmp, Path(run_dir) / "status.json")
    return status


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


class MetricsReader:
    """Reads only the lines appended to metrics.jsonl since the last call (a live chart polls this). A file that
    was replaced (a resumed run trims the lines past its checkpoint) is read again from the start."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.offset = 0
        self.inode = None
        self.records: list[dict] = []

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                if stat.st_ino != self.inode or stat.st_size < self.offset:
                    self.inode, self.offset, self.records = stat.st_ino, 0, []
                f.seek(self.offset)
                chunk = f.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits for the next poll
        self.offset += len(complete.encode())
        new = []
        for line in complete.splitlines():
            try:
                new.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a damaged line costs one point on the chart, not the page
        self.records.extend(new)
        return new


def read_metrics(run_dir: Path) -> list[dict]:
    reader = MetricsReader(run_dir)
    reader.poll()
    return reader.records


def log_tail(run_dir: Path, lines: int = 20) -> str:
    try:
        with open(Path(run_dir) / "train.log", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    # progress bars redraw with \r; keep what the last redraw shows
    shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(shown[-lines:])


def last_checkpoint(run_dir: Path) -> Path | None:
    # only complete checkpoints: transformers writes trainer_state.json last, so a save cut short has none
    ckpts = [
        p
        for p in Path(run_dir).glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]), default=None)
