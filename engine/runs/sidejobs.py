"""Work outside the GPU queue, one job at a time per workshop student: trying a model, evaluating it, exporting it,
writing a GGUF file (the engine.generate / evaluate / export / gguf_file processes the Try & Export page starts).

These are short next to training and run beside it, so they do not wait for a slot; but without a bound one
student's open tabs could each start one (three 5000-row evaluations were seen running beside another student's
training). Each such process of a student holds an exclusive lock on a file in the student's folder while it
works; a second one is refused with a sentence that says what is running. The lock is the kernel's (flock): it
ends with the process however it ends, so a killed job never leaves a student locked out. Instructors and the
machine's owner are not bounded.
"""

import fcntl
import json
import os
import time
from contextlib import contextmanager

from engine import paths
from engine.runs.registry import RunError
from engine.users import User


class Busy(RunError):
    """The student already has a job of this kind running; the message is for a person."""


@contextmanager
def one_at_a_time(user: User, what: str):
    """Hold the user's side-job lock while the block runs (what: "an evaluation of run 3", for the refusal)."""
    if user.sees_all:
        yield
        return
    folder = paths.user_area(user.name)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".side-job", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = _holder(fd)
            raise Busy(
                f"You already have {held.get('what', 'a job')} running (started "
                f"{time.strftime('%H:%M', time.localtime(held.get('at', time.time())))}); one at a time per "
                "student, so the server stays quick for the class. Wait for it to finish, then try again."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"what": what, "at": time.time(), "pid": os.getpid()}).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
