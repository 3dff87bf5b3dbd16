"""cluster.yaml is validated offline against Ray's own autoscaler schema and EC2's API model."""

from __future__ import annotations

import copy
from pathlib import Path

import botocore.session
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def run_instances_input():
    model = botocore.session.get_session().get_service_model("ec2")
    return model.operation_model("RunInstances").input_shape


def test_cluster_yaml_passes_ray_schema(cluster_config):
    validate_config(prepare_config(copy.deepcopy(cluster_config)))


def test_schema_check_rejects_a_broken_copy(cluster_config):
    broken = copy.deepcopy(cluster_config)
    broken["available_node_types"]["worker.gpu.a10g"]["min_workers"] = "zero"
    with pytest.raises(Exception, match=r"min_workers|zero"):
        validate_config(prepare_config(broken))


def _check_against_shape(value, shape, path: str) -> list[str]:
    """Recursively check a node_config fragment against a botocore input shape."""
    problems: list[str] = []
    if shape.type_name == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        for key, sub in value.items():
            if key not in shape.members:
                problems.append(f"{path}.{key}: not a RunInstances parameter")
            else:
                problems += _check_against_shape(sub, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        for i, item in enumerate(value):
            problems += _check_against_shape(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string")
        elif shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} not one of the allowed values")
    elif shape.type_name == "integer" and not isinstance(value, int):
        problems.append(f"{path}: expected an integer")
    return problems


def test_node_configs_are_valid_run_instances_parameters(cluster_config, run_instances_input):
    problems = []
    for name, node_type in cluster_config["available_node_types"].items():
        problems += _check_against_shape(node_type["node_config"], run_instances_input, name)
    assert problems == []


def test_node_config_check_catches_a_typo(cluster_config, run_instances_input):
    node_config = copy.deepcopy(cluster_config["available_node_types"]["head.cpu"]["node_config"])
    node_config["InstanceTyp"] = "m6i.2xlarge"
    node_config["InstanceType"] = "m6i.notasize"
    problems = _check_against_shape(node_config, run_instances_input, "head")
    assert any("InstanceTyp:" in p for p in problems)
    assert any("notasize" in p for p in problems)


def test_gpu_workers_and_cpu_only_head(cluster_config):
    head = cluster_config["available_node_types"][cluster_config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    gpu_types = {"g5", "g6", "g4dn", "p3", "p4d", "p5"}
    workers = [
        nt
        for name, nt in cluster_config["available_node_types"].items()
        if name != cluster_config["head_node_type"]
    ]
    assert workers
    for worker in workers:
        assert worker["node_config"]["InstanceType"].split(".")[0] in gpu_types
        assert worker["min_workers"] == 0
    assert any(
        "pip install" in cmd and "ray-logme" in cmd for cmd in cluster_config["setup_commands"]
    )


def test_every_node_gets_the_token_and_starts_in_token_mode(cluster_config):
    """Ray 2.60 token auth (README "Token authentication"): the launching machine's token is
    copied to every node, kept private, and every `ray start` runs in token mode."""
    mounts = cluster_config["file_mounts"]
    assert mounts["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert "chmod 600 ~/.ray/auth_token" in cluster_config["setup_commands"]
    starts = [
        command
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
        for command in cluster_config[key]
        if "ray start" in command
    ]
    assert len(starts) == 2
    assert all(command.startswith("export RAY_AUTH_MODE=token;") for command in starts)
