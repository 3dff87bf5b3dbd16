"""Shared test fixtures: a real S3-compatible server on loopback, one local Ray cluster, and an
empty feature store (``store``) on a local folder or that server.

The server and the cluster are session-scoped: the moto server starts in under a second, Ray in
5-10 s, and every test that needs them shares the same instance. The S3 endpoint and credentials
are exported as the standard AWS environment variables *before* Ray starts, so Ray workers reach
the same server through the same pyarrow/boto3 code paths as AWS (see ../shared/RAY_NOTES.md).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ray_logme.storage import FeatureStore

# Nothing may download at test time: make every hub client fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "tests" / "data"


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server on 127.0.0.1 and the settings to reach it."""

    host: str
    port: int
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        """``host:port``, as pyarrow's ``endpoint_override`` takes it (with ``scheme="http"``)."""
        return f"{self.host}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        """``http://host:port``, as boto3's ``endpoint_url`` takes it."""
        return f"http://{self.host}:{self.port}"

    def boto3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def pyarrow_fs(self):
        from pyarrow import fs

        return fs.S3FileSystem(
            endpoint_override=self.endpoint,
            scheme="http",
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
        )

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that point at this server (what Ray workers need)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def new_bucket(self, prefix: str = "test") -> str:
        """Create a fresh, uniquely named bucket and return its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.boto3_client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible HTTP server (moto's server mode) on a free loopback port.

    The standard AWS environment variables point at it for the whole session, so code that
    follows the default credential chain and ``AWS_ENDPOINT_URL`` talks to it, never to AWS.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    info = S3Server(host=host, port=port)
    saved = {k: os.environ.get(k) for k in info.environment()}
    os.environ.update(info.environment())
    try:
        yield info
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> FeatureStore:
    """An empty store on a local folder or in a fresh bucket of the moto server."""
    from ray_logme.storage import FeatureStore

    if request.param == "local":
        return FeatureStore(str(tmp_path / "store"))
    s3 = request.getfixturevalue("s3_server")
    return FeatureStore(f"s3://{s3.new_bucket()}/feature-store")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two shared cores: one thread per test process is faster and keeps results stable."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ray_cluster(s3_server: S3Server):
    """One small local Ray cluster for the whole test session.

    Depends on ``s3_server`` so the AWS variables are set before the workers start. Capped at 2
    CPUs and 256 MiB of object store, no dashboard; never stopped with ``ray stop``.
    """
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        object_store_memory=256 << 20,
        log_to_driver=False,
        runtime_env={"env_vars": s3_server.environment()},
    )
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.wait_for_min_actors_s = 60
    ctx.enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


def _checked_copy(folder: Path) -> Path:
    """``folder``, after checking every file ``folder/SHA256SUMS`` lists (``sha256sum`` format)
    against its digest: the copies in tests/data are the ones their README describes."""
    import hashlib

    names = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert actual == digest, f"{folder.name}/{name}: sha256 {actual}, SHA256SUMS says {digest}"
        names.append(name)
    assert len(names) == len(list(folder.glob("*"))) - 2, (
        "a file beside README/SHA256SUMS is unlisted"
    )
    return folder


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """LogME reference vectors kept in the repo (``tests/data/logme_reference``, see its README)."""
    return _checked_copy(DATA_DIR / "logme_reference")


@pytest.fixture(scope="session")
def groundtruth_dir() -> Path:
    """Published ground-truth tables kept in the repo (``tests/data/groundtruth``, see its README)."""
    return _checked_copy(DATA_DIR / "groundtruth")
