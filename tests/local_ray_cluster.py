"""A Ray cluster of several nodes on this one machine, for the multi-node tests.

Every node is its own `ray start --block` process, the leader of its own process group: the raylet, the object
store and the node's agents are its children, and the Serve replicas the raylet's. So a node dies the way a VM's
Ray dies when its raylet is killed (`ray start --block` then ends the rest of the node), and `shutdown()` ends
exactly this cluster's processes, by process group, leaving any other Ray on the machine alone (a bare
`ray stop` would not). Every port is chosen free, and the nodes keep their files under a temporary directory of
their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from loadtests.harness import free_port

RAY = str(Path(sys.executable).parent / "ray")
OBJECT_STORE_BYTES = 200 * 2**20
START_TIMEOUT_S = 120


@dataclass
class Node:
    name: str
    process: subprocess.Popen  # `ray start --block`, leader of the node's process group
    log: Path

    def raylet(self) -> psutil.Process:
        """The node's raylet (a child of `ray start`)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for child in psutil.Process(self.process.pid).children():
                if child.name() == "raylet":
                    return child
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"{self.name}: no raylet after {START_TIMEOUT_S} s")

    def kill_raylet(self) -> int:
        """SIGKILLs the raylet, as when the node's machine is lost; returns its pid."""
        raylet = self.raylet()
        raylet.send_signal(signal.SIGKILL)
        return raylet.pid

    def stop(self, grace_s: float = 5.0) -> None:
        """Ends every process of the node (its whole process group): SIGTERM, then SIGKILL after `grace_s`."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def distinct_free_ports(count: int, taken: set[int]) -> list[int]:
    """`count` free ports, none twice and none in `taken`: a port is free until its node binds it, so two draws
    can return the same one (Ray refuses to start a node whose components share a port; seen in CI)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


@dataclass
class LocalCluster:
    """A head and worker nodes on 127.0.0.1. `dashboard` is the address `serve deploy --address` takes."""

    root: Path
    env: dict[str, str]
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, args: list[str]) -> Node:
        flags = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port")  # fmt: skip
        ports = dict(zip(flags, distinct_free_ports(len(flags), {self.gcs_port, self.dashboard_port}), strict=True))
        log = self.root / f"{name}.log"
        command = [
            RAY,
            "start",
            "--block",
            *args,
            *(f"{flag}={port}" for flag, port in ports.items()),
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--temp-dir={self.root / name}",
            "--disable-usage-stats",
        ]
        with log.open("w") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        node = Node(name, process, log)
        self.nodes.append(node)
        node.raylet()  # started (or raises with the node's log)
        return node

    def start_head(self, num_cpus: int) -> Node:
        return self._start(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                f"--num-cpus={num_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
        )

    def add_worker(self, name: str, num_cpus: int) -> Node:
        """A worker node with `num_cpus` logical CPUs and a custom resource of its own name (one unit)."""
        return self._start(
            name,
            [
                f"--address=127.0.0.1:{self.gcs_port}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps({name: 1})}",
            ],
        )

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
