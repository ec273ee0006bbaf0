"""Runs through a real Ray cluster: a head and a second node process on this machine (tests/ray_cluster.py),
started once for this file and ended in its teardown, with nothing left behind. About 3 minutes on 2 cores, most
of it the cluster's start (~25-40 s) and the embedded model's loading in each job.

The cluster is a fixture rather than a service of .ci/run, so `pytest tests/test_ray.py` and `make test` need
nothing else; without `ray` installed the file is skipped."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
from test_runs import finished, spec

from conftest import run_cli, wait_for
from engine import rundir, runs
from engine.runs import ray as ray_executor
from engine.users import OWNER

pytest.importorskip("ray")
pytestmark = pytest.mark.ray  # a real cluster: `pytest -m "not ray"` leaves these out


@pytest.fixture(scope="module")
def cluster():
    from ray_cluster import LocalCluster

    started = time.time()
    c = LocalCluster().start(workers=1)
    c.start_s = time.time() - started
    yield c
    swept = c.stop()
    assert not c.leftovers(), "no process of the cluster is left behind"
    print(f"ray cluster: started in {c.start_s:.1f} s; {len(swept)} process(es) swept after the groups ended")


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CLUSTER", cluster.address)
    ray_executor._nodes_cache = (0.0, [])
    return cluster


def short(model, steps, **kw):
    """test_runs' run with short rows: a few seconds a step of the embedded model on a shared CPU."""
    return spec(model, steps, **{"max_length": 64, "save_steps": 2, **kw})


def steps_logged(run):
    return [m["step"] for m in rundir.read_metrics(run["run_dir"]) if "loss" in m]


def test_two_runs_train_at_once_one_stopped_and_resumed_the_app_restarts_meanwhile(on_cluster, embedded_dir):
    a = runs.submit(short(embedded_dir, 100_000), OWNER)  # until stopped; resumed to a few steps more
    b = runs.submit(short(embedded_dir, 8), OWNER)  # still training when the app "restarts"
    both = wait_for(
        lambda: (
            all((r := runs.get(i, OWNER))["node"] and steps_logged(r) for i in (a, b))
            and [runs.get(i, OWNER) for i in (a, b)]
        ),
        timeout=300,
    )
    assert {r["state"] for r in both} == {"running"}, "two slots: the cluster's two 1-CPU nodes"
    assert len({r["node"] for r in both}) == 2, "one run per node"
    assert all(r["where"].startswith("Ray · ") and r["executor"] == "ray" for r in both)

    # the app restarts while b trains: its supervisor is gone, and the next reconcile follows the job again
    job_b, supervisor_b = both[1]["job_id"], both[1]["supervisor_pid"]
    os.kill(supervisor_b, signal.SIGKILL)
    wait_for(lambda: not runs.alive(supervisor_b), timeout=10)
    again = runs.get(b, OWNER)  # list_runs -> reconcile
    assert again["job_id"] == job_b and again["supervisor_pid"] != supervisor_b and runs.alive(again["supervisor_pid"])

    wait_for(lambda: rundir.last_checkpoint(both[0]["run_dir"]), timeout=240)
    # a stop asks the trainer to checkpoint (SIGTERM, RAY_JOB_STOP_WAIT_TIME_S of grace), and waits until it is gone
    trainer_pid = rundir.read_status(both[0]["run_dir"])["pid"]
    started = time.time()
    stopped = runs.stop(a, OWNER)
    stop_s = time.time() - started
    assert stopped["state"] == "stopped" and stop_s < ray_executor.STOP_GRACE_S + 8, stop_s
    assert not runs.alive(trainer_pid), "the trainer is gone when stop returns"
    assert ray_executor._call("GET", f"/api/jobs/{stopped['job_id']}")["status"] == "STOPPED"
    checkpoint = int(rundir.last_checkpoint(stopped["run_dir"]).name.split("-")[1])
    config = Path(stopped["run_dir"]) / "config.yaml"
    config.write_text(config.read_text().replace("max_steps: 100000", f"max_steps: {checkpoint + 2}"))

    runs.resume(a, OWNER)
    done_a, done_b = wait_for(lambda: finished(a), timeout=300), wait_for(lambda: finished(b), timeout=300)
    assert done_b["state"] == "completed", done_b["error"]
    assert done_a["state"] == "completed", done_a["error"]
    assert steps_logged(done_a) == list(range(1, checkpoint + 3)), "the resumed run continues from its checkpoint"
    assert done_a["job_id"] != stopped["job_id"], "a resume is a new job"
    assert (Path(done_a["run_dir"]) / "final" / "adapter_config.json").is_file()
    assert "-m engine.train --config" in (Path(done_a["run_dir"]) / "command.txt").read_text()

    shown = run_cli("engine.runs", "show", str(b), "--json", env={"TUNEWISE_CLUSTER": on_cluster.address})
    assert shown.returncode == 0, shown.stderr
    shown = json.loads(shown.stdout)
    assert shown["executor"] == "ray" and shown["node"] and shown["job_id"] == job_b
    print(f"stop-to-gone through Ray: {stop_s:.1f} s")


def test_a_broken_config_fails_with_its_sentence_on_the_runs_page(on_cluster, tiny_model, tmp_path):
    from streamlit.testing.v1 import AppTest

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "no completion here"}\n' * 3)
    run_id = runs.submit(short(tiny_model, 2, dataset_name=str(bad)), OWNER)
    run = wait_for(lambda: finished(run_id), timeout=180)
    assert run["state"] == "failed" and run["error"] and "exited with code" not in run["error"], run["error"]
    at = AppTest.from_file(str(runs.paths.REPO / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/runs.py")
    at.run()
    assert not at.exception
    assert list(at.dataframe[0].value["where"]) == [f"Ray · {run['node']}"]
    page = " ".join(e.value for e in at.error) + " ".join(str(m.value) for m in at.markdown)
    assert run["error"].splitlines()[0][:60] in page, (run["error"], page[:2000])
    at.switch_page("app_pages/hardware.py")
    at.run()
    assert not at.exception
    listed = [d.value for d in at.dataframe if list(d.value.columns) == ["node", "head", "gpus", "cpus"]]
    assert len(listed) == 1 and len(listed[0]) == 2 and listed[0]["head"].sum() == 1, "the cluster's two nodes"


def test_more_gpus_than_any_node_is_refused_at_submit(on_cluster, tiny_model):
    with pytest.raises(runs.RunError, match="asks for 2 GPUs but the largest machine of the Ray cluster"):
        runs.submit(short(tiny_model, 2, num_processes=2), OWNER)
    assert runs.list_runs(OWNER) == [], "nothing registered"


def test_an_unreachable_cluster_is_a_sentence_and_runs_wait(tiny_model, monkeypatch):
    from conftest import free_port
    from engine.runs import executors

    monkeypatch.setenv("TUNEWISE_CLUSTER", f"127.0.0.1:{free_port()}")
    ray_executor._nodes_cache = (0.0, [])
    assert "cannot be reached" in executors.note() and "nothing is lost" in executors.note()
    run_id = runs.submit(short(tiny_model, 2), OWNER)
    time.sleep(3)
    run = runs.get(run_id, OWNER)
    assert run["state"] == "queued" and run["position"] == 1, "it waits in line, nothing lost"
    assert run["where"] == "Ray cluster"
    out = run_cli("engine.runs", "cluster")
    assert out.returncode == 0 and "cannot be reached" in out.stdout
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(runs.paths.REPO / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/runs.py")
    at.run()
    assert not at.exception and any("cannot be reached" in w.value for w in at.warning), "the Runs page says why"
    runs.stop(run_id, OWNER)
    assert runs.get(run_id, OWNER)["state"] == "stopped"


def test_a_node_dying_with_a_run_fails_it_with_the_reason(on_cluster, tiny_model):
    """Last in this file: it ends the cluster's second node."""
    ids = [runs.submit(short(tiny_model, 100_000, save_steps=1), OWNER) for _ in range(2)]  # one run per node
    wait_for(lambda: all(runs.get(i, OWNER)["node"] for i in ids), timeout=240)
    second = next(n for n in ray_executor.nodes(fresh=True) if not n.head)
    victim = next(i for i in ids if runs.get(i, OWNER)["node"] == second.label)
    wait_for(lambda: rundir.last_checkpoint(runs.get(victim, OWNER)["run_dir"]), timeout=240)
    os.killpg(on_cluster.groups[1], signal.SIGKILL)  # the second node's raylet and agents: a machine gone
    lost = wait_for(lambda: finished(victim), timeout=120)
    assert lost["state"] == "failed" and "its node stopped answering" in lost["error"], lost["error"]
    assert "resume it to continue" in lost["error"] and rundir.last_checkpoint(lost["run_dir"])
    for i in ids:
        if runs.get(i, OWNER)["state"] == "running":
            runs.stop(i, OWNER)
