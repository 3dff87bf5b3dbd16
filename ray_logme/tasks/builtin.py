"""Built-in tasks: small labelled tables generated in-process, so a run needs no download.

Each built-in task is one table-building function registered under its URI with
:func:`register_builtin_task`, which records the task's columns, modality, kind and ``version``
(part of every task revision: bump it when the table changes) in :data:`BUILTIN_TASKS`, the
registry every lookup goes through. :func:`builtin_table` builds a task's table once per process,
deterministically (fixed seeds). scikit-learn and PIL are imported only when a table is built.

Adding one::

    @register_builtin_task(
        "builtin:squares",
        description="...",
        input_column="image",
        label_column="side",
        modality="image",
        kind="regression",
        version=1,
        columns=("image", "side", "fold"),
    )
    def _squares_table() -> pa.Table: ...
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa

from ray_logme.errors import TaskError

if TYPE_CHECKING:
    from ray_logme.tasks.packaged import DataPackage

BUILTIN_URI_PATTERN = re.compile(r"^(sklearn|builtin):")
"""URIs that name a built-in task (a :class:`~ray_logme.tasks.spec.TaskSpec` looks them up)."""


@dataclass(frozen=True)
class BuiltinTask:
    """A small task generated in-process (no download), deterministic for a given version."""

    uri: str
    description: str
    input_column: str
    label_column: str
    modality: Literal["image", "text"]
    kind: Literal["classification", "regression"]
    version: int
    columns: tuple[str, ...]
    #: builds the full table (called once per process, through :func:`builtin_table`)
    build: Callable[[], pa.Table] = field(repr=False, compare=False)
    #: the package that ships the task's data files (:mod:`ray_logme.tasks.packaged`), if any
    requires: DataPackage | None = None

    def fingerprint(self) -> list[list[str]]:
        """What names the task's rows in its revision: URI and version, plus the content hash
        of the data files for a task that reads a package's files."""
        entries = [[self.uri, f"v{self.version}"]]
        if self.requires is not None:
            entries.append(self.requires.fingerprint(self.uri))
        return entries


BUILTIN_TASKS: dict[str, BuiltinTask] = {}
"""Built-in tasks by URI, in registration order; filled by :func:`register_builtin_task`.
Every one has a ``fold`` column (row index mod 5) for filter examples."""


def register_builtin_task(
    uri: str,
    *,
    description: str,
    input_column: str,
    label_column: str,
    modality: Literal["image", "text"],
    kind: Literal["classification", "regression"],
    version: int,
    columns: tuple[str, ...],
    requires: DataPackage | None = None,
) -> Callable[[Callable[[], pa.Table]], Callable[[], pa.Table]]:
    """Decorator: register the decorated function as the table builder of built-in task ``uri``.

    ``uri`` must match :data:`BUILTIN_URI_PATTERN` and be new; ``input_column`` and
    ``label_column`` must be among ``columns`` (the table's columns, ``fold`` included). The
    function is returned unchanged.
    """
    if not BUILTIN_URI_PATTERN.match(uri):
        raise ValueError(f"built-in task URI {uri!r} must start with 'sklearn:' or 'builtin:'")
    if uri in BUILTIN_TASKS:
        raise ValueError(f"built-in task {uri!r} is already registered")
    missing = [column for column in (input_column, label_column) if column not in columns]
    if missing:
        raise ValueError(f"built-in task {uri!r}: columns {list(columns)} lack {missing}")

    def register(build: Callable[[], pa.Table]) -> Callable[[], pa.Table]:
        BUILTIN_TASKS[uri] = BuiltinTask(
            uri=uri,
            description=description,
            input_column=input_column,
            label_column=label_column,
            modality=modality,
            kind=kind,
            version=version,
            columns=tuple(columns),
            build=build,
            requires=requires,
        )
        return build

    return register


def builtin_task(uri: str) -> BuiltinTask:
    """The registered built-in task of ``uri``; :class:`TaskError` naming the known ones if none."""
    task = BUILTIN_TASKS.get(uri)
    if task is None:
        raise TaskError(f"unknown built-in task {uri!r}: known are {sorted(BUILTIN_TASKS)}")
    return task


def builtin_table(uri: str) -> pa.Table:
    """The full table of a built-in task (cached per process)."""
    builtin_task(uri)
    return _builtin_table_cached(uri)


@functools.cache
def _builtin_table_cached(uri: str) -> pa.Table:
    return BUILTIN_TASKS[uri].build()


def _png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels: uint8[h, w]`` -> lossless grey PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@register_builtin_task(
    "sklearn:digits",
    description="scikit-learn's 1,797 handwritten digits, 8x8 grey upscaled x4 to 32x32 PNG; 10 classes",
    input_column="image",
    label_column="label",
    modality="image",
    kind="classification",
    version=1,
    columns=("image", "label", "fold"),
)
def _digits_table() -> pa.Table:
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # [n, 8, 8], 0..16 -> 0..255
    upscaled = grey.repeat(4, axis=1).repeat(4, axis=2)  # nearest neighbour, exact: [n, 32, 32]
    num_rows = len(grey)
    return pa.table(
        {
            "image": pa.array([_png_bytes(image) for image in upscaled], pa.binary()),
            "label": pa.array(digits.target.astype(np.int64)),
            "fold": pa.array(np.arange(num_rows, dtype=np.int64) % 5),
        }
    )


@register_builtin_task(
    "builtin:discs",
    description="600 32x32 grey PNGs of one soft-edged disc on noise; regress radius "
    "(or center_x, center_y, brightness)",
    input_column="image",
    label_column="radius",
    modality="image",
    kind="regression",
    version=1,
    columns=("image", "radius", "center_x", "center_y", "brightness", "fold"),
)
def _discs_table(num_rows: int = 600, size: int = 32) -> pa.Table:
    rng = np.random.default_rng(20240601)
    radius = rng.uniform(3.0, 12.0, num_rows)
    center_x = rng.uniform(radius, size - radius)
    center_y = rng.uniform(radius, size - radius)
    brightness = rng.uniform(0.45, 1.0, num_rows)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    images = []
    for i in range(num_rows):
        distance = np.hypot(xx - center_x[i], yy - center_y[i])
        coverage = np.clip(radius[i] - distance + 0.5, 0.0, 1.0)  # anti-aliased edge
        pixels = 20.0 + 235.0 * brightness[i] * coverage + rng.normal(0.0, 6.0, (size, size))
        images.append(_png_bytes(np.clip(np.round(pixels), 0, 255).astype(np.uint8)))
    return pa.table(
        {
            "image": pa.array(images, pa.binary()),
            "radius": pa.array(radius),
            "center_x": pa.array(center_x),
            "center_y": pa.array(center_y),
            "brightness": pa.array(brightness),
            "fold": pa.array(np.arange(num_rows, dtype=np.int64) % 5),
        }
    )


_TOPIC_TEMPLATES: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "sports": (
        (
            "The {team} beat their rivals {score} in a tense {sport} match on {day}.",
            "{player} scored twice as the {team} won the {sport} final.",
            "Fans packed the stadium to watch the {team} play {sport} against the visitors.",
            "The coach praised the defence after a {score} win in the {sport} league.",
            "After a knee injury, {player} returned to training with the {team}.",
            "The {team} signed {player} before the new {sport} season.",
        ),
        {
            "team": ("Rovers", "Eagles", "Tigers", "United", "Rangers", "Falcons", "Wolves"),
            "sport": ("football", "basketball", "hockey", "rugby", "cricket", "volleyball"),
            "player": ("Garcia", "Okafor", "Lindqvist", "Tanaka", "Moreau", "Silva"),
            "score": ("2-1", "3-0", "98-94", "4-2", "1-0", "27-24"),
            "day": ("Saturday", "Sunday", "Friday night", "Wednesday"),
        },
    ),
    "cooking": (
        (
            "Stir the {ingredient} into the {dish} and simmer for {minutes} minutes.",
            "This {dish} recipe needs fresh {ingredient} and a pinch of {spice}.",
            "Preheat the oven, then bake the {dish} for {minutes} minutes until golden.",
            "Chop the {ingredient}, season with {spice}, and serve the {dish} warm.",
            "Our chef adds {spice} to the {dish} just before serving.",
            "Whisk the eggs, fold in the {ingredient}, and let the {dish} rest.",
        ),
        {
            "ingredient": ("garlic", "onions", "tomatoes", "spinach", "mushrooms", "lentils"),
            "dish": ("soup", "risotto", "curry", "pie", "stew", "omelette", "casserole"),
            "spice": ("cumin", "paprika", "nutmeg", "black pepper", "cinnamon", "oregano"),
            "minutes": ("10", "15", "20", "25", "40", "45"),
        },
    ),
    "astronomy": (
        (
            "The telescope captured a faint {object} near the constellation {constellation}.",
            "Astronomers measured the orbit of a {object} circling a distant star.",
            "The {mission} probe sent back images of {planet} during its flyby.",
            "A bright {object} will be visible after sunset in {constellation} on {day}.",
            "Scientists launched the {mission} spacecraft to study the moons of {planet}.",
            "Light from the {object} took millions of years to reach the observatory.",
        ),
        {
            "object": ("comet", "nebula", "galaxy", "exoplanet", "supernova", "asteroid"),
            "constellation": ("Orion", "Cygnus", "Lyra", "Cassiopeia", "Andromeda", "Taurus"),
            "mission": ("Voyager", "Juno", "Cassini", "Galileo", "Horizons", "Pioneer"),
            "planet": ("Jupiter", "Saturn", "Neptune", "Mars", "Uranus", "Pluto"),
            "day": ("Saturday", "Sunday", "Friday night", "Wednesday"),
        },
    ),
    "finance": (
        (
            "Shares of {company} rose {percent} percent after strong quarterly earnings.",
            "The central bank raised interest rates by {bps} basis points on {day}.",
            "Investors moved money into {asset} as the {market} market fell.",
            "{company} reported revenue growth of {percent} percent and raised its dividend.",
            "Analysts expect {asset} prices to climb as inflation slows.",
            "Bond yields fell {bps} basis points while {company} stock hit a record.",
        ),
        {
            "company": ("Acme Corp", "Globex", "Initech", "Umbrella Ltd", "Stark Industries"),
            "percent": ("3", "5", "7", "12", "18", "21"),
            "bps": ("25", "50", "75", "10"),
            "asset": ("gold", "government bonds", "the dollar", "index funds", "real estate"),
            "market": ("stock", "housing", "bond", "currency"),
            "day": ("Saturday", "Sunday", "Friday night", "Wednesday"),
        },
    ),
}


@register_builtin_task(
    "builtin:topics",
    description="800 template sentences on 4 topics (sports, cooking, astronomy, finance)",
    input_column="text",
    label_column="label",
    modality="text",
    kind="classification",
    version=1,
    columns=("text", "label", "fold"),
)
def _topics_table(rows_per_topic: int = 200) -> pa.Table:
    rng = np.random.default_rng(20240602)
    topics = list(_TOPIC_TEMPLATES)
    texts: list[str] = []
    labels: list[str] = []
    for _ in range(rows_per_topic):
        for topic in topics:
            templates, slots = _TOPIC_TEMPLATES[topic]
            template = templates[int(rng.integers(len(templates)))]
            names = re.findall(r"{(\w+)}", template)
            values = {name: slots[name][int(rng.integers(len(slots[name])))] for name in names}
            texts.append(template.format(**values))
            labels.append(topic)
    return pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "label": pa.array(labels, pa.string()),
            "fold": pa.array(np.arange(len(texts), dtype=np.int64) % 5),
        }
    )
