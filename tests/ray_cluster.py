"""A real two-node Ray cluster on this machine, for tests/test_ray.py and bench/ray_executor.py: a head and a
second node process, 1 CPU each, a small object store, every port free-picked (two sessions never collide).

Each `ray start` runs in a session of its own, so every process it leaves behind (GCS, raylet, dashboard, agents)
shares its process group; stop() ends those groups and then any process naming the cluster's temp folder, by id.
Not `ray stop`: that ends every Ray process of the machine, a colleague's included."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
SMALL = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", "100000000", "--disable-usage-stats"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self):
        self.temp = tempfile.mkdtemp(prefix="twray", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.gcs_port, self.dashboard_port = _port(), _port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.groups: list[int] = []

    def _ray_start(self, *args) -> None:
        node_ports = ["--dashboard-agent-listen-port", str(_port()), "--node-ip-address", "127.0.0.1"]
        proc = subprocess.Popen(
            [RAY, "start", *args, *SMALL, *node_ports],
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        self.groups.append(proc.pid)
        out, _ = proc.communicate(timeout=120)
        if proc.returncode:
            raise RuntimeError(f"ray start failed:\n{out[-3000:]}")

    def start(self, workers: int = 1) -> "LocalCluster":
        self._ray_start(
            "--head",
            "--port",
            str(self.gcs_port),
            "--dashboard-port",
            str(self.dashboard_port),
            "--dashboard-host",
            "127.0.0.1",
            "--include-dashboard=true",
            "--temp-dir",
            self.temp,
            "--ray-client-server-port",
            str(_port()),
        )
        for _ in range(workers):
            self._ray_start("--address", f"127.0.0.1:{self.gcs_port}")
        self.wait_for_nodes(1 + workers)
        return self

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        import json

        end = time.time() + timeout
        while time.time() < end:
            try:
                with urllib.request.urlopen(f"{self.address}/api/v0/nodes", timeout=2) as r:
                    found = json.loads(r.read())["data"]["result"]["result"]
                if sum(n["state"] == "ALIVE" for n in found) >= count:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the Ray cluster did not reach {count} node(s) in {timeout:g} s")

    def stop(self) -> list[int]:
        """End the cluster; returns the ids of processes that had to be ended by the sweep (jobs' workers)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for group in self.groups:
                try:
                    os.killpg(group, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(1.5)
        swept = self.leftovers()
        for pid in swept:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)
        return swept

    def leftovers(self) -> list[int]:
        """Live processes of this cluster: in one of its process groups, or naming its temp folder."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if stat[0] != "Z" and (int(stat[2]) in self.groups or self.temp in cmdline):
                found.append(int(entry.name))
        return found
