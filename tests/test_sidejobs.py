"""Work outside the GPU queue (trying, evaluating, exporting a model) is one job at a time per workshop student,
enforced by the engine processes themselves (engine/runs/sidejobs.py): a second is refused with a sentence, a
killed job never leaves the student locked out, and instructors are not bounded."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli
from engine import paths, users
from engine.runs import sidejobs


@pytest.fixture
def workshop(monkeypatch, tunewise_home):
    monkeypatch.setenv("TUNEWISE_MODE", "workshop")
    users.setup("teach", "teach-pass-1")
    users.add("ana", password="ana-pass-1", by=users.OWNER)
    return users.find("ana"), users.find("teach")


def test_a_student_runs_one_side_job_at_a_time_and_is_told_what_runs(workshop):
    ana, _ = workshop
    with sidejobs.one_at_a_time(ana, "an evaluation of run 3"):  # e.g. a 5000-row evaluation in another tab
        done = run_cli("engine.generate", "--model", "embedded", "--prompt", "hello", "--as", "ana")
        assert done.returncode == 2
        assert "You already have an evaluation of run 3 running" in done.stderr and "Wait for it" in done.stderr
        with pytest.raises(sidejobs.Busy):
            with sidejobs.one_at_a_time(ana, "an export"):
                pass
    with sidejobs.one_at_a_time(ana, "an export"):  # once it ended, the next one starts
        pass


def test_a_killed_side_job_frees_the_student_and_instructors_are_not_bounded(workshop):
    ana, teach = workshop
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from engine import users; from engine.runs import sidejobs\n"
            "with sidejobs.one_at_a_time(users.find('ana'), 'an evaluation'):\n"
            "    print('holding', flush=True); time.sleep(120)",
        ],
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(sidejobs.Busy):
            with sidejobs.one_at_a_time(ana, "an answer"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    with sidejobs.one_at_a_time(ana, "an answer"):  # the kernel released the dead process's lock
        with sidejobs.one_at_a_time(teach, "an evaluation"), sidejobs.one_at_a_time(teach, "an export"):
            pass
    assert oct((paths.user_area("ana") / ".side-job").stat().st_mode & 0o777) == "0o600"
