"""`dpserve serve --ray` and `dpserve batch --ray` on a real two-node Ray cluster (127.0.0.1 only).

One cluster for the whole module (Ray is heavy: one start, shared), and the tests run in file
order on it: sim replicas spread over both nodes → precise_prefix fed by KV events from both
nodes → placement that cannot happen → replicas killed under load → a node lost → SIGTERM →
SIGKILL → the built-in engine → a batch job.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from dpserve.http_names import WORKER_HEADER
from tests.conftest import free_port
from tests.integration.launcher.serve_process import chat, gateway_metric, workers
from tests.ray.cluster import CPUS_PER_NODE, RayTestCluster, replica_processes, wait_until
from tests.support import stop_process, wait_http_ok

pytestmark = pytest.mark.timeout(240)

SIM_ARGS = ["--backend", "sim", "--stagger-s", "0", "--no-echo-replica-logs", "--restart-backoff-s", "0.5",
            "--liveness-timeout-s", "10"]


@dataclass
class Serve:
    """One `dpserve serve --ray` process of a test."""

    proc: subprocess.Popen[bytes]
    port: int
    dir: Path
    prefix: str = ""  # dpserve-<deployment id>, the start of its actors' and groups' names
    load_failures: list[str] = field(default_factory=list)

    def log(self) -> str:
        return (self.dir / "serve.log").read_text(errors="replace")

    def healthy(self) -> int:
        return sum(1 for w in workers(self.port) if w.get("healthy"))


def start_serve(cluster: RayTestCluster, tmp: Path, args: Sequence[str], ready: bool = True) -> Serve:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dpserve", "serve", "--ray", "--ray-address", cluster.gcs_address,
             "--port", str(port), "--log-dir", str(tmp / "logs"), *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    serve = Serve(proc, port, tmp)
    if ready:
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/readiness", 120, proc)
        except (RuntimeError, TimeoutError) as exc:
            stop_process(proc)
            raise AssertionError(f"{exc}\n{serve.log()[-4000:]}") from exc
        serve.prefix = "dpserve-" + re.search(r"Ray deployment (\w+):", serve.log()).group(1)  # type: ignore[union-attr]
    return serve


def node_of_each_replica(cluster: RayTestCluster, serve: Serve) -> dict[str, str]:
    """Replica id → node id of its live actor (the state API's view)."""
    return {a.name.split("-")[2]: a.node_id for a in cluster.actors(serve.prefix) if a.state == "ALIVE"}


def replica_pid(serve: Serve, replica_id: str) -> int:
    """The replica's current process id on its node, from the launcher's note in its log."""
    starts = re.findall(r"started pid (\d+) on node", (serve.dir / "logs" / f"{replica_id}.log").read_text())
    return int(starts[-1])


class Load:
    """Requests through the gateway from 4 threads until stopped; every non-200 is a failure."""

    def __init__(self, port: int) -> None:
        self.port, self.sent, self.failures = port, 0, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(4)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=90)

    def _run(self, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                status, _ = chat(self.port, f"load {i} {n}", max_tokens=4)
                if status != 200:
                    self.failures.append(str(status))
            except Exception as exc:  # any failure a client would see counts
                self.failures.append(repr(exc))
            self.sent += 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    started = RayTestCluster.start()
    try:
        yield started
    finally:
        left = started.stop()
        assert left == [], f"Ray processes left after ray stop: {left}"


def complete(base_url: str, prompt: str) -> str:
    """A 1-token completion at base_url (the gateway or one replica); the x-dpserve-worker header."""
    body = json.dumps({"model": "smollm2-135m", "prompt": prompt, "max_tokens": 1}).encode()
    req = urllib.request.Request(f"{base_url}/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        return resp.headers.get(WORKER_HEADER, "")


def scrape_targets(serve: Serve) -> dict[str, str]:
    """Replica name → host:port in the file `--write-prometheus-config` keeps."""
    jobs = yaml.safe_load((serve.dir / "prometheus.yml").read_text())["scrape_configs"]
    return {c["labels"]["replica"]: c["targets"][0] for c in jobs[1]["static_configs"]}


def worker_targets(serve: Serve) -> dict[str, str]:
    """Replica name → host:port of the gateway's workers."""
    return {str(w["name"]): str(w["url"]).removeprefix("http://") for w in workers(serve.port)}


@pytest.fixture(scope="module")
def sim_serve(cluster: RayTestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("sim4")
    serve = start_serve(cluster, tmp, [*SIM_ARGS, "--dp-size", "4", "--policy", "round_robin",
                                       "--write-prometheus-config", str(tmp / "prometheus.yml")])
    try:
        yield serve
    finally:
        stop_process(serve.proc)


def test_asking_more_than_the_cluster_has_is_a_clear_error_and_leaves_nothing(
        cluster: RayTestCluster, tmp_path: Path) -> None:
    serve = start_serve(cluster, tmp_path, [*SIM_ARGS, "--dp-size", str(2 * CPUS_PER_NODE + 1)], ready=False)
    assert serve.proc.wait(timeout=120) == 2
    log = serve.log()
    assert "9 replicas × {CPU 1} (STRICT_PACK: each on one node) = CPU 9 asked" in log, log[-3000:]
    assert "can hold 8 such replica(s): 2 alive node(s)" in log
    assert cluster.actors("dpserve-") == [] and cluster.groups("dpserve-") == []


def test_sim_replicas_land_on_both_nodes_and_serve_the_openai_client(
        cluster: RayTestCluster, sim_serve: Serve) -> None:
    wait_until(lambda: sim_serve.healthy() == 4, 60, "4 healthy workers")
    nodes = node_of_each_replica(cluster, sim_serve)
    assert sorted(nodes) == ["r0", "r1", "r2", "r3"]
    assert set(nodes.values()) == {n.node_id for n in cluster.nodes()}  # both nodes hold replicas
    assert len(cluster.groups(sim_serve.prefix)) == 4
    assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+", str(w["url"])) for w in workers(sim_serve.port))
    seen = {chat(sim_serve.port, f"spread {i}")[1] for i in range(40)}
    assert seen == {str(w["id"]) for w in workers(sim_serve.port)}  # the gateway routes to all 4
    # Prometheus is told where Ray put them (their addresses are known only once placed).
    wait_until(lambda: scrape_targets(sim_serve) == worker_targets(sim_serve), 10, "scrape config")

    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{sim_serve.port}/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(model="smollm2-135m", max_tokens=8,
                                           messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens == 8
    assert [m.id for m in client.models.list().data] == ["smollm2-135m"]


def test_precise_prefix_routes_on_kv_events_from_replicas_on_both_nodes(
        cluster: RayTestCluster, sim_serve: Serve, tmp_path: Path) -> None:
    """Each replica publishes on tcp of its node (actor-reserved ports) and the gateway subscribes
    there. A prompt sent straight to one replica is known to the gateway only through that
    replica's BlockStored events; the gateway then routes the same prompt to that replica."""
    serve = start_serve(cluster, tmp_path, [*SIM_ARGS, "--dp-size", "4", "--policy", "precise_prefix"])
    try:  # the cluster's other 4 CPUs: both nodes hold some of these replicas too
        wait_until(lambda: serve.healthy() == 4, 60, "4 healthy workers")
        assert set(node_of_each_replica(cluster, serve).values()) == {n.node_id for n in cluster.nodes()}
        r0_log = (serve.dir / "logs/r0.log").read_text()
        assert '"endpoint": "tcp://*:' in r0_log and '"replay_endpoint": "tcp://127.0.0.1:' in r0_log
        # Until its tokenizer process is up the gateway routes by the tree, which never saw these
        # prompts (they go straight to the replicas): wait for the keys, as an operator would.
        wait_until(lambda: gateway_metric(serve.port, "dpserve_kv_keyer_ready") == 1, 60,
                   "the gateway's tokenizer process ready")
        for i, worker in enumerate(workers(serve.port)):
            prompt = f"replica {i}: " + " ".join(f"w{i}x{k}" for k in range(80))  # 5 blocks of 16
            before = gateway_metric(serve.port, "dpserve_kv_index_blocks")  # only BlockStored adds to it
            complete(str(worker["url"]), prompt)  # not through the gateway
            wait_until(lambda: gateway_metric(serve.port, "dpserve_kv_index_blocks") >= before + 5,  # noqa: B023
                       15, f"BlockStored events of {worker['name']} in the gateway's index")
            assert complete(f"http://127.0.0.1:{serve.port}", prompt) == worker["id"]
        assert gateway_metric(serve.port, "dpserve_kv_events_gaps_total") == 0
    finally:
        os.kill(serve.proc.pid, signal.SIGTERM)
        assert serve.proc.wait(timeout=60) == 0
    wait_until(lambda: cluster.actors(serve.prefix) == [] and cluster.groups(serve.prefix) == [], 15,
               "the precise_prefix serve's actors and groups gone")  # their CPUs are the next test's


def test_a_second_serve_that_cannot_be_placed_in_time_fails_and_takes_only_its_own(
        cluster: RayTestCluster, sim_serve: Serve, tmp_path: Path) -> None:
    before = {a.name for a in cluster.actors(sim_serve.prefix)}
    other = start_serve(cluster, tmp_path, [*SIM_ARGS, "--dp-size", "5", "--startup-timeout-s", "3"],
                        ready=False)
    assert other.proc.wait(timeout=120) == 2
    log = other.log()
    assert "Ray placed 4 of 5 replica(s) within --startup-timeout-s 3: each asks {CPU 1}" in log, log[-3000:]
    prefix = "dpserve-" + re.search(r"Ray deployment (\w+):", log).group(1)  # type: ignore[union-attr]
    assert cluster.groups(prefix) == [] and cluster.actors(prefix) == []
    assert {a.name for a in cluster.actors(sim_serve.prefix)} == before and sim_serve.healthy() == 4


def test_a_killed_actor_and_a_killed_replica_are_routed_around_and_come_back(
        cluster: RayTestCluster, sim_serve: Serve) -> None:
    wait_until(lambda: sim_serve.healthy() == 4, 60, "4 healthy workers")
    actor_pid = next(a.pid for a in cluster.actors(sim_serve.prefix) if a.name.split("-")[2] == "r0")
    with Load(sim_serve.port) as load:
        wait_until(lambda: load.sent >= 20, 30, "load running")
        os.kill(actor_pid, signal.SIGKILL)  # the actor dies (its replica goes with it)
        wait_until(lambda: "r0" in node_of_each_replica(cluster, sim_serve)
                   and sim_serve.healthy() == 4 and replica_pid(sim_serve, "r0") > 0
                   and len(re.findall("started pid", (sim_serve.dir / "logs/r0.log").read_text())) == 2,
                   60, "r0 back after its actor was killed")
        os.kill(replica_pid(sim_serve, "r1"), signal.SIGKILL)  # the replica process dies
        wait_until(lambda: len(re.findall("started pid", (sim_serve.dir / "logs/r1.log").read_text())) == 2
                   and sim_serve.healthy() == 4, 60, "r1 back after its process was killed")
        sent_at_end = load.sent + 20
        wait_until(lambda: load.sent >= sent_at_end, 30, "load still flowing")
    assert load.failures == [], load.failures[:5]
    r0_log = (sim_serve.dir / "logs/r0.log").read_text()
    assert "its Ray actor is gone" in r0_log and "restarting in 0.5s" in r0_log
    assert "exited (signal 9); restarting in 0.5s" in (sim_serve.dir / "logs/r1.log").read_text()


def test_replicas_of_a_lost_node_are_placed_again_on_the_other_node(
        cluster: RayTestCluster, sim_serve: Serve) -> None:
    wait_until(lambda: sim_serve.healthy() == 4, 60, "4 healthy workers")
    lost = cluster.worker_node_id()
    moved = sorted(r for r, node in node_of_each_replica(cluster, sim_serve).items() if node == lost)
    assert moved, "no replica on the worker node"
    cluster.kill_node(lost)
    head = wait_until(lambda: [n.node_id for n in cluster.nodes()] if len(cluster.nodes()) == 1 else None,
                      30, "the lost node noticed")[0]
    wait_until(lambda: sorted(node_of_each_replica(cluster, sim_serve).values()) == [head] * 4
               and sim_serve.healthy() == 4, 90, "every replica running on the remaining node")
    assert sim_serve.proc.poll() is None
    for replica_id in moved:
        assert "its Ray actor is gone" in (sim_serve.dir / "logs" / f"{replica_id}.log").read_text()
    # Placed again at new addresses: the Prometheus file follows them.
    wait_until(lambda: scrape_targets(sim_serve) == worker_targets(sim_serve), 10, "scrape config")


def test_sigterm_removes_every_actor_and_placement_group_of_the_deployment(
        cluster: RayTestCluster, sim_serve: Serve) -> None:
    assert chat(sim_serve.port, "before stop")[0] == 200
    os.kill(sim_serve.proc.pid, signal.SIGTERM)
    assert sim_serve.proc.wait(timeout=60) == 0
    assert cluster.actors(sim_serve.prefix) == [] and cluster.groups(sim_serve.prefix) == []
    wait_until(lambda: replica_processes() == [], 15, "replica processes gone")


def test_sigkill_of_serve_leaves_nothing_of_ours_in_the_cluster(
        cluster: RayTestCluster, tmp_path: Path) -> None:
    serve = start_serve(cluster, tmp_path, [*SIM_ARGS, "--dp-size", "2"])
    wait_until(lambda: len(cluster.actors(serve.prefix)) == 2 and len(replica_processes()) == 2, 60,
               "2 replicas running")
    os.kill(serve.proc.pid, signal.SIGKILL)
    serve.proc.wait(timeout=10)
    wait_until(lambda: cluster.actors(serve.prefix) == [] and cluster.groups(serve.prefix) == []
               and replica_processes() == [], 60, "everything of the killed serve gone")


@pytest.mark.model
def test_builtin_engine_with_the_bundled_model_on_cpu_bundles(
        cluster: RayTestCluster, tmp_path: Path) -> None:
    serve = start_serve(cluster, tmp_path, ["--backend", "builtin", "--dp-size", "1",
                                            "--no-echo-replica-logs", "--ray-cpus-per-replica", "2"])
    try:
        body = json.dumps({"model": "smollm2-135m", "max_tokens": 8, "temperature": 0,
                           "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        reply = subprocess.run(["curl", "-s", f"http://127.0.0.1:{serve.port}/v1/chat/completions",
                                "-H", "Content-Type: application/json", "-d", body],
                               capture_output=True, text=True, timeout=120, check=True)
        answer = json.loads(reply.stdout)
        assert answer["usage"]["completion_tokens"] >= 1 and answer["choices"][0]["message"]["content"]
        r0 = (serve.dir / "logs/r0.log").read_text()
        assert "--device cpu --num-threads 2" in r0 and "CUDA_VISIBLE_DEVICES=" in r0
        [group] = cluster.groups(serve.prefix)
        assert group.bundles[0]["unit_resources"] == {"CPU": 2.0}
    finally:
        os.kill(serve.proc.pid, signal.SIGTERM)
        assert serve.proc.wait(timeout=60) == 0
    assert cluster.actors(serve.prefix) == [] and cluster.groups(serve.prefix) == []


def test_batch_co_launches_its_replicas_on_ray(cluster: RayTestCluster, tmp_path: Path) -> None:
    from tests.integration.offline.helpers import read_output, write_input

    ids = write_input(tmp_path / "in.jsonl", 40, model="smollm2-135m", max_tokens=4)
    done = subprocess.run(
        [sys.executable, "-m", "dpserve", "batch", str(tmp_path / "in.jsonl"),
         "-o", str(tmp_path / "out.jsonl"), "--ray", "--ray-address", cluster.gcs_address,
         "--backend", "sim", "--dp-size", "2", "--stagger-s", "0", "--log-dir", str(tmp_path / "logs"),
         "--no-echo-replica-logs", "--progress", "none"],
        capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = read_output(tmp_path / "out.jsonl")
    assert sorted(line["custom_id"] for line in lines) == sorted(ids)
    assert all(line["error"] is None for line in lines)
    assert "40 succeeded, 0 failed" in done.stderr
    assert cluster.actors("dpserve-") == [] and cluster.groups("dpserve-") == []
    # The job talks to its replicas directly: nobody would subscribe to their KV events.
    assert "--kv-events-config" not in (tmp_path / "logs/r0.log").read_text()
