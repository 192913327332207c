"""DeepXRay on a Ray cluster: the launcher file, the serve profiles, the KubeRay manifest, the README's cluster
commands, and the real application on a head and two worker nodes, one of which is killed while requests run.

The files are checked with Ray's own code: `ray up`/`ray down`/`ray dashboard` apply the launcher's
`_bootstrap_config` (the local provider's preparation, the defaults, the launcher's JSON schema) before they touch
a VM; `serve deploy` reads a profile with `_generate_config_from_file_or_import_path` (Ray Serve's
`ServeDeploySchema`); command lines are parsed by Ray's own click commands. `deepxray.profiles` then holds each
profile against the app builder.

The multi-node tests start three Ray nodes on this machine, each its own `ray start` (tests/local_ray_cluster.py):
a head without CPUs (Ray's control plane, the Serve controller, a proxy) and two workers of 10 logical CPUs each,
room for the cluster profile's whole-CPU replicas (eight at its minimum) on one worker once the other is gone.
The README's `serve deploy`, `serve status` and `curl` commands run against it as written, but for the local
addresses; the profile deployed is serve_config.cluster.yaml with its HTTP host and port changed (the machine is
shared, port 8000 may be taken).
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from local_ray_cluster import LocalCluster, Node

from deepxray.labels import JOINT_NAMES, RESEARCH_NOTICE
from deepxray.models.artifacts import read_card
from deepxray.profiles import (
    CLUSTER_PROFILE,
    ONE_MACHINE_PROFILE,
    ProfileError,
    check_profiles,
    profile_problems,
    read_profile,
)
from loadtests.harness import free_port, models_dir, models_present, wait_ready
from loadtests.harness import wait_until as wait_for

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
MANIFEST = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
README_SECTION = "## From one machine to a cluster"
# The addresses in the README's commands: the dashboard through `ray dashboard cluster.yaml`, and the head's proxy.
README_DASHBOARD = "http://127.0.0.1:8265"
README_SERVICE = "http://192.0.2.10:8000"
APP = "deepxray"
DEPLOYMENTS = ("Ingress", "BodyPart", "JointDetection", "RatingenScore", "ChestFindings")
WORKER_CPUS = 10
READY_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 30  # the load's client timeout: an answer later than this is a hang
RECOVERY_LIMIT_S = 60


# ------------------------------------------------------------------------------------------------ the README


def readme_cluster_commands() -> list[str]:
    """The command lines of the README's cluster section (its ```shell blocks; they need VMs, so they are not
    in the ```bash blocks that tests/test_readme.py runs)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```shell\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def readme_command(*first_words: str) -> list[str]:
    """The words of the one README cluster command that starts with `first_words`."""
    matches = [
        shlex.split(c) for c in readme_cluster_commands() if shlex.split(c)[: len(first_words)] == [*first_words]
    ]
    assert len(matches) == 1, f"{' '.join(first_words)}: {len(matches)} commands in the README's cluster section"
    return matches[0]


def readme_exports() -> dict[str, str]:
    """The environment the README's `export NAME=VALUE` lines set for the commands after them."""
    exports = [shlex.split(c)[1] for c in readme_cluster_commands() if c.startswith("export ")]
    return dict(export.split("=", 1) for export in exports)


def ray_cli_parses(words: list[str]) -> None:
    """Ray's own `ray` CLI parses the command's options and arguments (nothing runs)."""
    from ray.scripts.scripts import cli

    assert words[0] == "ray" and words[1] in cli.commands, f"not a ray command: {words}"
    cli.commands[words[1]].make_context(words[1], words[2:])


def serve_cli_parses(words: list[str]) -> None:
    from ray.serve.scripts import cli

    assert words[0] == "serve" and words[1] in cli.commands, f"not a serve command: {words}"
    cli.commands[words[1]].make_context(words[1], words[2:])


def test_every_cluster_command_in_the_readme_is_run_or_checked():
    """Each command is run here, run by the multi-node tests below, or checked as far as this machine can."""
    commands = readme_cluster_commands()
    kinds = Counter()
    for command in commands:
        words = shlex.split(command)
        if words[:2] in (["ray", "up"], ["ray", "down"], ["ray", "dashboard"]):
            ray_cli_parses(words)  # the options exist; the file is the one the launcher test validates
            assert words[2] == CLUSTER_YAML.name, command
        elif words[:2] == ["ray", "get-auth-token"]:
            ray_cli_parses(words)  # the token file it writes is the one cluster.yaml copies to the nodes
            assert "~/.ray/auth_token" in yaml.safe_load(CLUSTER_YAML.read_text())["file_mounts"]
        elif words[0] == "export":  # the client's side of what the nodes start with; the multi-node tests use it
            starts = yaml.safe_load(CLUSTER_YAML.read_text())["head_start_ray_commands"]
            assert any(f"export {words[1]};" in start for start in starts), command
        elif words[:2] in (["serve", "deploy"], ["serve", "status"]):
            serve_cli_parses(words)  # and run by the multi-node tests against the local dashboard
            assert words[words.index("--address") + 1] == README_DASHBOARD, command
        elif words[0] == "curl":
            assert README_SERVICE in command  # run by the multi-node test against the local proxy
        elif words[:3] == ["python", "-m", "deepxray.profiles"]:
            result = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, capture_output=True, text=True)
            assert result.returncode == 0 and result.stdout.startswith("ok:"), result.stderr
        elif words[:3] == ["kubectl", "apply", "-f"]:
            assert ROOT / words[3] == MANIFEST  # checked by test_kuberay_manifest_serves_the_cluster_profile
        else:
            raise AssertionError(f"README cluster command not covered by a test: {command}")
        kinds[words[0]] += 1
    assert set(kinds) == {"ray", "export", "serve", "curl", "python", "kubectl"}, kinds


# ---------------------------------------------------------------------------------------------- cluster.yaml


def launcher_config(raw: dict) -> dict:
    """`raw` as `ray up` resolves it before it connects to any VM (raises where the launcher would refuse it)."""
    from ray.autoscaler._private.commands import _bootstrap_config

    return _bootstrap_config(copy.deepcopy(raw), no_config_cache=True)


def ray_start_words(command: str) -> list[str]:
    """The `ray start ...` part of a start command such as `export X=y; ulimit -n 65536; ray start --head ...`."""
    (start,) = [part.strip() for part in command.split(";") if part.strip().startswith("ray start")]
    return shlex.split(start)


def test_cluster_yaml_passes_the_launchers_validation():
    import click
    import jsonschema

    raw = yaml.safe_load(CLUSTER_YAML.read_text(encoding="utf-8"))
    config = launcher_config(raw)
    node_type = config["available_node_types"][config["head_node_type"]]
    workers = raw["provider"]["worker_ips"]
    assert config["provider"]["type"] == "local"
    assert node_type["min_workers"] == node_type["max_workers"] == len(workers) >= 2  # every listed VM joins
    assert config["file_mounts"]["~/deepxray"] == "."  # the checkout, models included, goes to every node
    assert any("pip install" in c and "-e ~/deepxray" in c for c in config["setup_commands"])

    head = [ray_start_words(c) for c in config["head_start_ray_commands"] if "ray start" in c]
    worker = [ray_start_words(c) for c in config["worker_start_ray_commands"] if "ray start" in c]
    for words in head + worker:
        ray_cli_parses(words)
    assert f"--dashboard-port={README_DASHBOARD.rsplit(':', 1)[1]}" in head[0]
    assert all("RAY_AUTH_MODE=token" in c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"] if "ray start" in c)

    # The validation is real: the launcher refuses a misspelt field and a provider without its workers.
    with pytest.raises(jsonschema.ValidationError):
        launcher_config({**raw, "setup_comands": []})
    with pytest.raises(click.ClickException):
        launcher_config({**raw, "provider": {"type": "local", "head_ip": raw["provider"]["head_ip"]}})


# ------------------------------------------------------------------------------------------- serve profiles


@pytest.mark.parametrize("path", [ONE_MACHINE_PROFILE, CLUSTER_PROFILE], ids=lambda p: p.name)
def test_a_profile_passes_serve_deploys_validation_and_fits_the_application(path):
    from ray.serve.scripts import _generate_config_from_file_or_import_path

    config = _generate_config_from_file_or_import_path(str(path), name=None, arguments={}, runtime_env=None)
    assert profile_problems(config) == []


def test_the_two_profiles_describe_the_same_application(tmp_path):
    check_profiles([ONE_MACHINE_PROFILE, CLUSTER_PROFILE])

    def drifted(change) -> Path:
        raw = yaml.safe_load(CLUSTER_PROFILE.read_text(encoding="utf-8"))
        change(raw["applications"][0])
        path = tmp_path / "drifted.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return path

    for change, problem in [
        (lambda app: app["deployments"][1].update(name="BodyPartV2"), "not the application's"),
        (lambda app: app["args"].update(stage_timeout=3), "not valid Settings"),
        (lambda app: app["args"].pop("retry_after_s"), "args"),
        (lambda app: app["deployments"][3]["user_config"].update(max_batch=4), "user_config keys"),
        (lambda app: app["deployments"][0]["autoscaling_config"].update(min_replicas=20), "options rejected"),
        (lambda app: app["args"].update(max_waiting=64), "max_scoring \\+ max_waiting"),
    ]:
        with pytest.raises(ProfileError, match=problem):
            check_profiles([ONE_MACHINE_PROFILE, drifted(change)])


def test_the_cluster_profile_is_made_for_a_cluster():
    from ray.serve.schema import HTTPOptionsSchema

    config = read_profile(CLUSTER_PROFILE)
    assert config.proxy_location.value == "EveryNode"  # one proxy per node
    assert config.http_options.host == "0.0.0.0" and config.http_options.request_timeout_s
    for deployment in config.applications[0].deployments:
        cpus = deployment.ray_actor_options.num_cpus
        assert cpus >= 1 and float(cpus).is_integer(), deployment.name  # whole CPUs
        scaling = deployment.autoscaling_config
        assert 2 <= scaling["min_replicas"] <= scaling["max_replicas"], deployment.name  # survives a node
        assert deployment.max_queued_requests > 0, deployment.name  # a fast 503 rather than a growing queue
    # TLS is there to switch on: the commented settings are ones Serve's HTTP options take.
    commented = dict(re.findall(r"^\s*# (ssl_(?:keyfile|certfile)): (\S+)", CLUSTER_PROFILE.read_text(), flags=re.M))
    assert set(commented) == {"ssl_keyfile", "ssl_certfile"}
    HTTPOptionsSchema(**config.http_options.model_dump(exclude_unset=True), **commented)


def test_kuberay_manifest_serves_the_cluster_profile():
    import ray
    from ray.serve.schema import ServeDeploySchema

    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    served = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    assert served.model_dump(exclude_unset=True) == read_profile(CLUSTER_PROFILE).model_dump(exclude_unset=True)

    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:  # KubeRay passes rayStartParams to `ray start` as strings
        assert all(isinstance(value, str) for value in group["rayStartParams"].values())
        assert group["template"]["spec"]["containers"][0]["image"]
    (workers,) = cluster["workerGroupSpecs"]
    assert 2 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]


# ------------------------------------------------------------------------------- the cluster, on one machine


def models_trained() -> bool:
    """As in tests/test_serving_integration.py: the cards say the models work on phantoms."""
    body_part = read_card(models_dir() / "body_part").validation_metrics
    detector = read_card(models_dir() / "joint_detection").validation_metrics
    return body_part.get("accuracy", 0.0) >= 0.9 and detector.get("within_quarter_mcp_distance", 0.0) >= 0.9


@dataclass
class Deployed:
    """The application deployed on a local cluster: its proxies' URL, the CLI environment, the dashboard."""

    cluster: LocalCluster
    url: str
    profile: Path
    env: dict[str, str]
    token: str
    min_replicas: dict[str, int]
    workers: dict[str, Node] = field(default_factory=dict)

    def details(self) -> dict:
        """Serve's state as the controller reports it (what `serve status` shows, with each replica's node)."""
        response = httpx.get(
            f"{self.cluster.dashboard}/api/serve/applications/",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def replicas(self, details: dict | None = None) -> dict[str, list[dict]]:
        deployments = (details or self.details())["applications"][APP]["deployments"]
        return {name: deployment["replicas"] for name, deployment in deployments.items()}

    def healthy(self, details: dict) -> bool:
        """Every deployment HEALTHY, with at least its minimum of replicas, all of them RUNNING."""
        application = details["applications"].get(APP)
        if not application or application["status"] != "RUNNING":
            return False
        return all(
            d["status"] == "HEALTHY"
            and len(d["replicas"]) >= self.min_replicas[name]
            and all(r["state"] == "RUNNING" for r in d["replicas"])
            for name, d in application["deployments"].items()
        )

    def node_of(self, replica: dict) -> Node:
        """The local node whose raylet started the replica's process."""
        raylet = psutil.Process(replica["pid"]).parent()
        (node,) = [n for n in self.workers.values() if n.raylet().pid == raylet.pid]
        return node

    def cli(self, words: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        """A README command with the local addresses and profile; `serve` from this environment."""
        local = {README_DASHBOARD: self.cluster.dashboard, CLUSTER_PROFILE.name: str(self.profile)}
        words = [local.get(word, word).replace(README_SERVICE, self.url) for word in words]
        if words[0] == "serve":
            words[0] = str(Path(sys.executable).parent / "serve")
        return subprocess.run(words, env=self.env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def deployed():
    if not models_present():
        pytest.skip(f"no model artifacts in {models_dir()}")
    # A short root: Ray's socket paths under it must stay within the 107 bytes Linux allows.
    root = Path(tempfile.mkdtemp(prefix="dxc-", dir="/tmp"))
    token = secrets.token_hex(32)
    (root / "auth_token").write_text(token)
    env = dict(
        os.environ,
        **readme_exports(),  # RAY_AUTH_MODE=token, as on the VMs
        RAY_AUTH_TOKEN_PATH=str(root / "auth_token"),  # this cluster's own token, not ~/.ray's
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=str(ROOT),
    )
    for name in ("RAY_AUTH_TOKEN", "RAY_ADDRESS"):  # would win over the token file and the explicit addresses
        env.pop(name, None)
    cluster = LocalCluster(root, env)
    try:
        cluster.start_head(num_cpus=0)
        workers = {name: cluster.add_worker(name, WORKER_CPUS) for name in ("worker1", "worker2")}

        port = free_port()
        raw = yaml.safe_load(CLUSTER_PROFILE.read_text(encoding="utf-8"))
        raw["http_options"].update(host="127.0.0.1", port=port)
        profile = root / CLUSTER_PROFILE.name
        profile.write_text(yaml.safe_dump(raw), encoding="utf-8")
        min_replicas = {
            d["name"]: d["autoscaling_config"]["min_replicas"] for d in raw["applications"][0]["deployments"]
        }
        deployed = Deployed(cluster, f"http://127.0.0.1:{port}", profile, env, token, min_replicas, workers)

        result = deployed.cli(readme_command("serve", "deploy"))
        assert result.returncode == 0, result.stderr[-3000:]
        wait_for(lambda: deployed.healthy(deployed.details()), READY_TIMEOUT_S, "every deployment HEALTHY", 1.0)
        wait_ready(deployed.url, 60)
        yield deployed
    finally:
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def assert_scored(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    answer = response.json()
    assert list(answer["scores"]) == list(JOINT_NAMES)
    assert answer["notice"] == RESEARCH_NOTICE
    return answer


@pytest.mark.cluster
@pytest.mark.serve
@pytest.mark.slow
def test_replicas_are_spread_over_the_workers_and_score(deployed, radiographs, tmp_path, capsys):
    details = deployed.details()
    head = details["controller_info"]["node_id"]
    placement = {name: sorted(r["node_id"] for r in replicas) for name, replicas in deployed.replicas(details).items()}
    workers = {node for nodes in placement.values() for node in nodes}
    assert len(workers) == 2 and head not in workers, placement  # both workers, none on the CPU-less head
    for name, nodes in placement.items():  # every stage on both workers: one can die without taking it away
        assert len(set(nodes)) == 2, (name, placement)
    assert {head, *workers} <= set(details["proxies"]), details["proxies"]  # a proxy on every node

    # The README's commands, as written but for the addresses.
    status = deployed.cli(readme_command("serve", "status"))
    assert status.returncode == 0, status.stderr
    deployments = yaml.safe_load(status.stdout)["applications"][APP]["deployments"]
    assert {name: d["status"] for name, d in deployments.items()} == dict.fromkeys(DEPLOYMENTS, "HEALTHY")

    phantom = radiographs.phantom("left_hand")
    image = radiographs.file("left_hand", "png")
    answers = [assert_scored(httpx.post(f"{deployed.url}/score", files={"xray": image}, timeout=60)) for _ in range(4)]
    if shutil.which("curl"):
        (tmp_path / "hand").mkdir()
        (tmp_path / "hand" / "00000.png").write_bytes(image)
        words = readme_command("curl")
        curl = deployed.cli([w.replace("@build/hand/", f"@{tmp_path}/hand/") for w in words])
        assert curl.returncode == 0, curl.stderr
        answers.append(json.loads(curl.stdout))
    # Whichever replicas answered, on whichever node: the same scores, and with trained models the phantom's.
    assert all(answer["scores"] == answers[0]["scores"] for answer in answers)
    if models_trained():
        assert answers[0]["scores"] == phantom.scores
    with capsys.disabled():
        print(f"\nplacement (replica nodes by deployment; head {head[:8]}):")
        for name, nodes in placement.items():
            print(f"  {name}: {[node[:8] for node in nodes]}")


# ---------------------------------------------------------------------------------------- CPU per image


def cluster_processes(deployed: Deployed) -> dict[str, list[psutil.Process]]:
    """The processes an image passes through, by role: each deployment's replicas (from Serve's state), the nodes'
    HTTP proxies and their raylets (found under the raylets, as Serve does not report the proxies' pids)."""
    roles = {name: [psutil.Process(r["pid"]) for r in rs] for name, rs in deployed.replicas().items()}
    raylets = [node.raylet() for node in deployed.cluster.nodes]
    roles["proxies"] = [
        child for raylet in raylets for child in raylet.children() if child.cmdline()[:1] == ["ray::ProxyActor"]
    ]
    roles["raylets"] = raylets
    return roles


def cpu_seconds(roles: dict[str, list[psutil.Process]]) -> dict[str, float]:
    return {
        role: sum(p.cpu_times().user + p.cpu_times().system for p in processes) for role, processes in roles.items()
    }


def send_images(url: str, upload: bytes, images: int, clients: int) -> list[int]:
    """`images` uploads, `clients` at a time, one after another in each; their statuses."""

    def send(_) -> int:
        return httpx.post(f"{url}/score", files={"xray": upload}, timeout=60).status_code

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(send, range(images)))


@pytest.mark.cluster
@pytest.mark.serve
@pytest.mark.slow
def test_cpu_per_image_by_stage(deployed, radiographs, capsys):
    """CPU seconds per image in every role, for 16-bit PNG and JPEG uploads (two clients at a time): what one
    whole-CPU replica of each deployment can take per second, the basis of docs/benchmarks.md's capacity note."""
    roles = cluster_processes(deployed)
    assert set(roles) == {*DEPLOYMENTS, "proxies", "raylets"} and len(roles["proxies"]) == 3, roles
    images, clients = 24, 2
    rows = {}
    for fmt in ("png", "jpeg"):
        upload = radiographs.file("left_hand", fmt)

        before, started = cpu_seconds(roles), time.monotonic()
        statuses = send_images(deployed.url, upload, images, clients)
        wall, after = time.monotonic() - started, cpu_seconds(roles)
        assert statuses == [200] * images
        rows[fmt] = {role: (after[role] - before[role]) / images for role in roles} | {"images_per_s": images / wall}
        assert rows[fmt]["Ingress"] > 0 and rows[fmt]["RatingenScore"] > 0, rows[fmt]

    with capsys.disabled():
        print(f"\nCPU ms per image by role ({images} images, {clients} clients, on this machine's 2 cores):")
        for fmt, row in rows.items():
            figures = ", ".join(f"{role} {1000 * s:.1f}" for role, s in row.items() if role != "images_per_s")
            print(f"  {fmt}: {figures}; {row['images_per_s']:.2f} images/s")


# ------------------------------------------------------------------------------------------ a node dies


@dataclass
class Outcome:
    started: float
    latency_s: float
    kind: str  # "ok", "http <status> <error code>", "connection lost", "timeout"


class Load:
    """Clients sending the same image in a loop, each request on a new connection (so the kernel spreads them over
    the nodes' proxies, which share the port), until stopped."""

    def __init__(self, url: str, image: bytes, clients: int):
        self.url, self.image = url, image
        self.outcomes: list[Outcome] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
            while not self.stopping.is_set():
                started = time.monotonic()
                try:
                    response = client.post(f"{self.url}/score", files={"xray": ("hand.jpg", self.image)})
                    kind = "ok" if response.status_code == 200 else f"http {response.status_code} {error(response)}"
                    if kind == "ok" and not scored(response):
                        kind = "200 without a scored answer"
                except httpx.TimeoutException:
                    kind = "timeout"
                except httpx.TransportError:
                    kind = "connection lost"
                self.outcomes.append(Outcome(started, time.monotonic() - started, kind))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> list[Outcome]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT_S + 10)
        assert not any(thread.is_alive() for thread in self.threads), "a client is stuck"
        return list(self.outcomes)

    def succeeded_after(self, moment: float) -> bool:
        return any(o.kind == "ok" and o.started >= moment for o in list(self.outcomes))


def scored(response: httpx.Response) -> bool:
    try:
        assert_scored(response)
    except (AssertionError, ValueError, KeyError):
        return False
    return True


def error(response: httpx.Response) -> str:
    """The error code of a JSON error answer, or what the body is when it is not one."""
    try:
        return response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"non-JSON body ({len(response.content)} bytes)"


@pytest.mark.cluster
@pytest.mark.serve
@pytest.mark.slow
def test_a_worker_node_dies_while_requests_run(deployed, radiographs, capsys):
    """Kill one worker's raylet (SIGKILL) under load: every deployment HEALTHY again within 60 s, every request
    answered (or its connection dropped at once), none past the client's timeout."""
    before = deployed.details()
    victim_replica = deployed.replicas(before)["Ingress"][0]
    victim_node_id, victim = victim_replica["node_id"], deployed.node_of(victim_replica)
    survivor = next(node for node in deployed.workers.values() if node is not victim)

    load = Load(deployed.url, radiographs.file("left_hand", "jpeg"), clients=3)
    load.start()
    try:
        time.sleep(5)  # steady load through both workers first
        killed_at = time.monotonic()
        victim.kill_raylet()

        def noticed() -> bool:  # the controller no longer counts a replica on the lost node
            replicas = deployed.replicas()
            return all(r.get("node_id") != victim_node_id for rs in replicas.values() for r in rs)

        wait_for(noticed, RECOVERY_LIMIT_S + 30, "the lost node's replicas dropped", period_s=0.5)
        noticed_at = time.monotonic()
        wait_for(lambda: deployed.healthy(deployed.details()), RECOVERY_LIMIT_S + 60, "HEALTHY again", period_s=0.5)
        healthy_at = time.monotonic()
        wait_for(lambda: load.succeeded_after(healthy_at), REQUEST_TIMEOUT_S, "a request answered after recovery")
        answered_at = time.monotonic()
        time.sleep(3)
    finally:
        outcomes = load.stop()

    after = deployed.replicas()
    kinds = Counter(o.kind for o in outcomes)
    figures = {
        "requests": len(outcomes),
        "outcomes": dict(kinds),
        "failed": len(outcomes) - kinds["ok"],
        "failed_after_healthy": sum(o.kind != "ok" for o in outcomes if o.started >= healthy_at),
        "max_latency_s": round(max(o.latency_s for o in outcomes), 2),
        "noticed_s": round(noticed_at - killed_at, 1),
        "healthy_s": round(healthy_at - killed_at, 1),
        "answered_after_healthy_s": round(answered_at - killed_at, 1),
        "replicas_after": {name: len(replicas) for name, replicas in after.items()},
    }
    with capsys.disabled():
        print(f"\nworker node killed under load: {json.dumps(figures)}")

    assert healthy_at - killed_at <= RECOVERY_LIMIT_S, figures
    assert kinds["timeout"] == 0 and figures["max_latency_s"] < REQUEST_TIMEOUT_S, figures  # nothing hung
    assert all(  # every error an answer with a status and a body saying what went wrong, or a dropped connection
        kind in ("ok", "connection lost") or (kind.startswith("http 5") and "0 bytes" not in kind) for kind in kinds
    ), figures
    assert kinds["ok"] > 0 and figures["failed_after_healthy"] == 0, figures
    # Everything now runs on the surviving worker, and the proxies there still answer.
    survivor_raylet = survivor.raylet().pid
    assert all(psutil.Process(r["pid"]).parent().pid == survivor_raylet for rs in after.values() for r in rs)
    status = deployed.cli(readme_command("serve", "status"))
    assert status.returncode == 0 and "UNHEALTHY" not in status.stdout, status.stdout
