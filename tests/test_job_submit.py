"""End to end through the real Ray job API: `ray start --head`, `ray job submit`, moto S3.

A head node is started on free loopback ports for this module and stopped afterwards by
signalling its own process (never `ray stop`, which kills every Ray process on the machine).
The nightly entry point runs as a submitted job against a bucket on the moto server; the tests
read the leaderboard and status tables back from the bucket.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from ray_logme.config import RunConfig
from ray_logme.storage import FeatureStore, list_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


class RayHead:
    """A `ray start --head --block` process on free ports, and the env to reach it."""

    def __init__(self, s3_env: dict[str, str]) -> None:
        gcs, dashboard, client, agent, agent_grpc, runtime_env, metrics, node, obj = free_ports(9)
        self.temp_dir = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # sockets need a short path
        self.address = f"http://127.0.0.1:{dashboard}"
        token = secrets.token_hex(16)
        self.env = {
            **os.environ,
            **s3_env,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "RAY_ADDRESS": self.address,
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        head_env = {k: v for k, v in self.env.items() if k != "RAY_ADDRESS"}
        self.log = open(Path(self.temp_dir) / "head.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(VENV_BIN / "ray"),
                "start",
                "--head",
                "--block",
                "--num-cpus=2",
                "--num-gpus=0",
                f"--port={gcs}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={client}",
                f"--dashboard-agent-listen-port={agent}",
                f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={runtime_env}",
                f"--metrics-export-port={metrics}",
                f"--node-manager-port={node}",
                f"--object-manager-port={obj}",
                "--min-worker-port=0",
                "--max-worker-port=0",
                "--object-store-memory=300000000",
                f"--temp-dir={self.temp_dir}",
                "--disable-usage-stats",
            ],
            env=head_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray head exited: {self.head_log()}")
            probe = self.ray("job", "list", check=False, timeout=60)
            if probe.returncode == 0:
                return
            time.sleep(2)
        raise RuntimeError(f"ray head not ready in {timeout}s: {self.head_log()}")

    def head_log(self) -> str:
        self.log.flush()
        return (Path(self.temp_dir) / "head.log").read_text()[-4000:]

    def ray(self, *args: str, check: bool = True, timeout: float = 120):
        out = subprocess.run(
            [str(VENV_BIN / "ray"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed: {out.stdout}\n{out.stderr}")
        return out

    def submit(self, submission_id: str, *entrypoint: str) -> None:
        self.ray(
            "job",
            "submit",
            "--no-wait",
            "--working-dir",
            ".",
            "--submission-id",
            submission_id,
            "--",
            *entrypoint,
        )

    def wait(self, submission_id: str, timeout: float = 420) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.ray("job", "status", submission_id).stdout
            # The CLI prints "Job 'x' succeeded" / "was stopped" / "failed" once it has ended.
            for word, state in (("succeeded", "SUCCEEDED"), ("was stopped", "STOPPED")):
                if f"Job '{submission_id}' {word}" in out:
                    return state
            if f"Job '{submission_id}' failed" in out:
                return "FAILED"
            time.sleep(3)
        raise TimeoutError(f"job {submission_id} still running after {timeout}s")

    def logs(self, submission_id: str) -> str:
        return self.ray("job", "logs", submission_id, check=False).stdout

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(s3_server):
    s3_env = {**s3_server.environment(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    head = RayHead(s3_env)
    try:
        yield head
    finally:
        head.stop()


def write_config(tmp_path: Path, store: str, **extra) -> Path:
    config = {
        "store": store,
        "models": [
            {"hub": "timm", "name": "test_resnet", "pretrained": False},
            {"hub": "timm", "name": "test_vit", "pretrained": False},
        ],
        "tasks": [
            {"name": "digits", "uri": "sklearn:digits", "max_samples": 96, "shard_rows": 32},
            {"name": "discs", "uri": "builtin:discs", "max_samples": 64, "shard_rows": 32},
        ],
        "resources": {"num_workers": 1, "cpus_per_worker": 0.5, "preprocess_cpus": 0.5},
        **extra,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    RunConfig.from_yaml(path)  # the test's own config must be valid
    return path


def test_nightly_job_writes_leaderboard_and_status_to_s3(ray_head, s3_server, tmp_path):
    bucket = s3_server.new_bucket("nightly")
    config = write_config(tmp_path, f"s3://{bucket}/lb")
    data = yaml.safe_load(config.read_text())
    data["models"].append({"hub": "timm", "name": "test_resnet_misspelt"})
    config.write_text(yaml.safe_dump(data))
    ray_head.submit("nightly-1", "python", "jobs/nightly_refresh.py", "--config", str(config))
    state = ray_head.wait("nightly-1")
    logs = ray_head.logs("nightly-1")
    # One model is broken: the job writes everything else, then exits non-zero.
    assert state == "FAILED", logs
    assert "leaderboard:" in logs and "failed:      2 of 6" in logs, logs

    store = FeatureStore(f"s3://{bucket}/lb")
    overall = store.read_table("leaderboard/overall.parquet").to_pandas()
    ranked = overall.dropna(subset=["overall_rank"])
    assert sorted(ranked["model"]) == ["test_resnet [random-init]", "test_vit [random-init]"]
    assert store.read_text("leaderboard/index.html").lstrip().lower().startswith("<!doctype html")
    (run_dir,) = store.list_dir("runs")
    status = store.read_table(f"runs/{run_dir}/status.parquet").to_pandas()
    assert len(status) == 6
    bad = status[status["model"] == "test_resnet_misspelt"]
    assert (bad["state"] == "failed").all()
    assert bad["error"].str.contains("closest names").all()
    good = status[status["model"] != "test_resnet_misspelt"]
    assert (good["state"] == "ok").all()
    assert good.groupby("task")["rows"].first().to_dict() == {"digits": 96, "discs": 64}
    scores = store.read_table(f"runs/{run_dir}/scores.parquet").to_pandas()
    scores = scores[scores["metric"] == "logme"]  # one row per (model, task, metric)
    assert scores[scores["state"] == "ok"]["score"].notna().sum() == 4


def feature_etags(store: FeatureStore) -> dict[str, str]:
    try:
        _, _, files = list_files(store.uri_of("features"))
    except Exception:
        return {}
    return {f.relpath: f.version for f in files}


def test_interrupted_job_resumes_to_the_same_leaderboard(
    ray_head, s3_server, tmp_path, ray_cluster
):
    bucket = s3_server.new_bucket("resume")
    tasks = [{"name": "digits", "uri": "sklearn:digits", "max_samples": 480, "shard_rows": 32}]
    config = write_config(tmp_path, f"s3://{bucket}/lb", run_id="nightly-resume", tasks=tasks)
    store = FeatureStore(f"s3://{bucket}/lb")
    ray_head.submit("resume-1", "python", "jobs/nightly_refresh.py", "--config", str(config))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(feature_etags(store)) < 2:
        time.sleep(0.5)
    ray_head.ray("job", "stop", "resume-1")
    assert ray_head.wait("resume-1") == "STOPPED", ray_head.logs("resume-1")
    committed = feature_etags(store)
    total = 2 * 15  # two models x 480 / 32 shards
    assert 0 < len(committed) < total, "the job was not interrupted mid-extract"
    assert not store.exists("runs/nightly-resume/scores.parquet")

    ray_head.submit(
        "resume-2",
        "python",
        "jobs/nightly_refresh.py",
        "--config",
        str(config),
        "--resume",
        "nightly-resume",
    )
    assert ray_head.wait("resume-2") == "SUCCEEDED", ray_head.logs("resume-2")
    after = feature_etags(store)
    assert len(after) == total
    assert {k: after[k] for k in committed} == committed  # committed shards were not rewritten
    status = store.read_table("runs/nightly-resume/status.parquet").to_pandas()
    assert int(status["shards_computed"].sum()) == total - len(committed)
    assert json.loads(store.read_text("runs/nightly-resume/run.json"))["state"] == "ok"

    # An uninterrupted run of the same config (in this process) ranks identically.
    from ray_logme.pipeline import refresh

    fresh_store = f"s3://{s3_server.new_bucket('fresh')}/lb"
    fresh_config = RunConfig.from_yaml(config).model_copy(
        update={"store": fresh_store, "run_id": "fresh"}
    )
    refresh(fresh_config, progress=False)
    resumed = _per_task(store)
    fresh = _per_task(FeatureStore(fresh_store))
    pd.testing.assert_frame_equal(
        resumed[["model", "task", "rank"]], fresh[["model", "task", "rank"]]
    )
    assert resumed["score"].tolist() == pytest.approx(fresh["score"].tolist(), rel=1e-5)


def _per_task(store: FeatureStore) -> pd.DataFrame:
    table = pq.read_table(
        store.path_of("leaderboard/per_task.parquet"), filesystem=store.filesystem
    )
    return table.to_pandas().sort_values(["task", "model"]).reset_index(drop=True)
