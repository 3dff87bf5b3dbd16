"""``ray-logme``: the command line. Thin: it parses, calls the package, prints.

ray-logme refresh                      # the embedded default: local Ray, local store
ray-logme refresh --config jobs/configs/nightly.yaml [--resume RUN_ID]
ray-logme score features.parquet --kind classification
ray-logme leaderboard --store ./ray-logme-store --max-params 50M
ray-logme evaluate --scores scores.parquet --truth truth.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from ray_logme import __version__
from ray_logme.errors import RayLogMEError, RunFailedError

logger = logging.getLogger("ray_logme")

DEFAULT_CONFIG = "local.yaml"

#: Exit codes: 0 every pair scored; 1 some (model, task) pairs failed (the rest is written);
#: 2 a config, usage or input error (nothing ran); 3 the run could not complete (its run.json
#: says ``state: failed``; ``--resume`` it).
EXIT_OK, EXIT_PAIRS_FAILED, EXIT_BAD_INPUT, EXIT_RUN_FAILED = 0, 1, 2, 3


def default_config_path() -> Path:
    """The embedded default config shipped inside the package (``ray_logme/configs/local.yaml``)."""
    return Path(str(resources.files("ray_logme") / "configs" / DEFAULT_CONFIG))


def shipped_configs() -> list[str]:
    """Names of the configs shipped in ``ray_logme/configs/`` (``local``, ``20newsgroups``, ...)."""
    folder = default_config_path().parent
    return sorted(path.stem for path in folder.glob("*.yaml"))


def shipped_config_path(name: str) -> Path:
    """The shipped config called ``name`` (``20newsgroups`` -> ``ray_logme/configs/20newsgroups.yaml``)."""
    return default_config_path().parent / f"{name}.yaml"


def config_path_of(given: str | None) -> Path:
    """``--config``: a YAML path, or the name of a shipped config; none: the embedded default."""
    if not given:
        return default_config_path()
    path = Path(given)
    if not path.exists() and "/" not in given and given in shipped_configs():
        return shipped_config_path(given)
    return path


# --------------------------------------------------------------------------------------------
# refresh


def cmd_refresh(args: argparse.Namespace) -> int:
    from ray_logme.cluster import connect_ray
    from ray_logme.config import RunConfig
    from ray_logme.pipeline import refresh

    config_path = config_path_of(args.config)
    config = RunConfig.from_yaml(config_path)
    if args.store:
        config = config.model_copy(update={"store": _store_uri(args.store)})
    connect_ray(args.address, args.num_cpus, verbose=args.verbose)
    result = refresh(
        config,
        resume=args.resume,
        progress=not args.no_progress,
        on_start=lambda run_id: print(f"run:         {run_id}", flush=True),
    )
    print(f"store:       {result.store_uri}")
    print(f"scores:      {result.scores_uri}")
    print(f"status:      {result.status_uri}")
    print(f"summary:     {result.leaderboard_md}")
    for task, why in result.skipped_tasks:
        print(f"skipped:     task {task}: {why}")
    if result.failed_pairs:
        print(f"failed:      {len(result.failed_pairs)} of {result.num_pairs} (model, task) pairs")
        for model, task, error in result.failed_pairs:
            print(f"  - {model} x {task}: {error.splitlines()[0] if error else ''}")
    print(f"took:        {result.seconds:.1f} s")
    print(f"leaderboard: {result.leaderboard_html}")
    return result.exit_code


# --------------------------------------------------------------------------------------------
# score


def cmd_score(args: argparse.Namespace) -> int:
    import numpy as np

    from ray_logme.metrics import logme

    features, labels = _load_features(Path(args.path), args.features_column, args.label_column)
    if args.kind == "classification" and labels.dtype.kind == "f":
        if not np.all(labels == np.round(labels)):
            raise RayLogMEError(
                f"{args.path}: labels are not integers; use --kind regression for real targets"
            )
        labels = labels.astype(np.int64)
    value = logme(features, labels, kind=args.kind)
    print(f"LogME ({args.kind}, n={features.shape[0]}, d={features.shape[1]}): {value:.6f}")
    return 0


def _load_features(path: Path, features_column: str, label_column: str):
    """Features ``float[n, d]`` and labels from a Parquet, ``.npz`` or ``.npy`` pair.

    Refuses features that are not one numeric matrix (ragged rows, text, objects), naming the
    file and the column or array.
    """
    import numpy as np

    if not path.exists():
        raise RayLogMEError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        data = np.load(path, allow_pickle=False)
        missing = {features_column, label_column} - set(data.files)
        if missing:
            raise RayLogMEError(f"{path} lacks array(s) {sorted(missing)}; it has {data.files}")
        return _numeric_matrix(data[features_column], f"{path} array {features_column!r}"), (
            np.asarray(data[label_column])
        )
    if suffix == ".npy":
        label_path = path.with_name(path.stem + ".labels.npy")
        if not label_path.exists():
            raise RayLogMEError(
                f"{path}: an .npy features file needs its labels beside it in {label_path.name}"
            )
        features = _numeric_matrix(np.load(path, allow_pickle=False), str(path))
        return features, np.load(label_path, allow_pickle=False)
    if suffix in (".parquet", ".pq") or path.is_dir():
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        missing = {features_column, label_column} - set(table.column_names)
        if missing:
            raise RayLogMEError(
                f"{path} lacks column(s) {sorted(missing)}; it has {table.column_names} "
                "(see --features-column / --label-column)"
            )
        where = f"{path} column {features_column!r}"
        features = _list_column_matrix(table.column(features_column).combine_chunks(), where)
        label_col = table.column(label_column).combine_chunks()
        if hasattr(label_col.type, "list_size") or hasattr(label_col.type, "value_type"):
            labels = _list_column_matrix(label_col, f"{path} column {label_column!r}")
        else:
            labels = label_col.to_numpy(zero_copy_only=False)
        return features, labels
    raise RayLogMEError(f"{path}: unsupported features file; use .parquet, .npz or .npy")


def _list_column_matrix(column, where: str):
    """A list / fixed-size-list Arrow column of numbers as ``[n, d]``; ragged rows refused."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) and not (
        pa.types.is_fixed_size_list(column.type)
    ):
        return _numeric_matrix(column.to_numpy(zero_copy_only=False), where)
    if not (
        pa.types.is_integer(column.type.value_type) or pa.types.is_floating(column.type.value_type)
    ):
        raise RayLogMEError(f"{where} holds {column.type.value_type} values; it must be numbers")
    if column.null_count:
        raise RayLogMEError(f"{where} has {column.null_count} empty (null) rows")
    if not pa.types.is_fixed_size_list(column.type):
        lengths = np.asarray(pc.list_value_length(column).to_numpy(zero_copy_only=False))
        sizes = sorted(set(lengths.tolist()))
        if len(sizes) > 1:
            raise RayLogMEError(
                f"{where} has rows of different lengths ({', '.join(map(str, sizes[:5]))}); "
                "every row must have the same number of features"
            )
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False))
    return values.reshape(len(column), -1)


def _numeric_matrix(array, where: str):
    """``array`` as a 2-D numeric matrix, or a clear error naming ``where``."""
    import numpy as np

    array = np.asarray(array)
    if array.dtype.kind not in "fiub":
        raise RayLogMEError(
            f"{where} holds {array.dtype} values; features must be a numeric [n, d] matrix"
        )
    if array.ndim != 2:
        raise RayLogMEError(f"{where} has shape {list(array.shape)}; features must be [n, d]")
    return array


# --------------------------------------------------------------------------------------------
# leaderboard


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from ray_logme.leaderboard import filter_models, to_markdown
    from ray_logme.pipeline import (
        build_run_leaderboard,
        check_rankable,
        is_finished,
        list_runs,
        load_history,
        load_run,
    )

    store = _store_from_args(args)
    runs = list_runs(store)
    if args.runs:
        for record in runs:
            print(
                f"{record['run_id']}  {record.get('timestamp', '')}  "
                f"{record.get('state', '?'):>12}  pairs={record.get('num_pairs', '?')} "
                f"failed={record.get('num_failed', '?')}"
            )
        return 0
    finished = [r for r in runs if is_finished(store, r["run_id"])]
    if not finished:
        raise RayLogMEError(f"no finished run on {store.uri_of('')}: run `ray-logme refresh` first")
    if args.run:
        record = next((r for r in finished if r["run_id"] == args.run), None)
        if record is None:
            raise RayLogMEError(f"run {args.run!r} not found or not finished on {store.uri_of('')}")
        run = load_run(store, record["run_id"], record)
        check_rankable(run)
    else:
        run = _published_run(store, finished) or _latest_readable_run(store, finished)
    board = build_run_leaderboard(
        run, load_history(store, exclude=run.run_id, before=run.record.get("timestamp") or None)
    )
    if args.max_params or args.min_throughput or args.max_feature_dim:
        board = filter_models(
            board,
            max_params=args.max_params,
            min_throughput=args.min_throughput,
            max_feature_dim=args.max_feature_dim,
        )
    if args.format == "csv":
        board.overall.to_csv(sys.stdout, index=False)
    else:
        print(to_markdown(board))
    return 0


def _published_run(store, finished):
    """The run the store's ``leaderboard/LATEST`` pointer names, as the refresh published it.

    ``None`` (and the caller falls back to the newest finished run) for a store written before
    the pointer existed, or when the run it names cannot be read or ranked (warned).
    """
    from ray_logme.leaderboard import read_latest
    from ray_logme.pipeline import check_rankable, load_run

    pointer = read_latest(store)
    if pointer is None:
        return None
    record = next((r for r in finished if r["run_id"] == pointer.run_id), None)
    try:
        if record is None:
            raise RayLogMEError("it is not a finished run on the store")
        run = load_run(store, record["run_id"], record)
        check_rankable(run)
        return run
    except Exception as exc:
        logger.warning(
            "the published leaderboard names run %s, which cannot be shown (%s); showing the "
            "newest finished run instead",
            pointer.run_id,
            exc,
        )
        return None


def _latest_readable_run(store, finished):
    """The newest finished run whose tables load and rank; damaged ones are named and skipped."""
    from ray_logme.pipeline import check_rankable, load_run

    for record in finished:
        try:
            run = load_run(store, record["run_id"], record)
            check_rankable(run)
            return run
        except Exception as exc:
            logger.warning(
                "skipping run %s: its tables cannot be ranked: %s", record["run_id"], exc
            )
    raise RayLogMEError(
        f"no finished run on {store.uri_of('')} can be read (see the warnings above); run "
        "`ray-logme refresh` to write a new one"
    )


def _store_uri(value: str) -> str:
    """``--store``, checked like the config's ``store:`` (``ConfigError`` naming the option)."""
    from ray_logme.config import check_store_uri
    from ray_logme.errors import ConfigError

    try:
        return check_store_uri(value)
    except ValueError as exc:
        raise ConfigError(f"--store: {exc}") from None


def _store_from_args(args: argparse.Namespace):
    from ray_logme.config import RunConfig
    from ray_logme.storage import FeatureStore

    if args.store:
        return FeatureStore(_store_uri(args.store))
    config = RunConfig.from_yaml(config_path_of(args.config))
    return FeatureStore(config.store, config.storage)


# --------------------------------------------------------------------------------------------
# evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ray_logme.evaluate import run_evaluate

    evaluation = run_evaluate(
        args.scores,
        args.truth,
        output_path=args.output,
        score_col=args.score_col,
        truth_col=args.truth_col,
        model_col=args.model_col,
        group_col=args.group_col or "task",
        metric=args.metric,
        top_k=args.top_k,
        num_bootstrap=args.num_bootstrap,
        confidence=args.confidence,
        seed=args.seed,
    )
    sys.stdout.write(evaluation.to_json() if args.format == "json" else evaluation.to_markdown())
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``evaluate`` options; their defaults are the library's (``ray_logme.evaluate``)."""
    from ray_logme.evaluate import DEFAULT_CONFIDENCE, DEFAULT_NUM_BOOTSTRAP, DEFAULT_TOP_K

    parser.add_argument(
        "--scores", required=True, help="scores table (Parquet/CSV; path or s3:// URI)"
    )
    parser.add_argument("--truth", required=True, help="ground truth CSV: model, task, accuracy")
    parser.add_argument("--score-col", default="score", help="score column (default: score)")
    parser.add_argument(
        "--truth-col", default="accuracy", help="accuracy column (default: accuracy)"
    )
    parser.add_argument("--model-col", default="model", help="model column (default: model)")
    parser.add_argument(
        "--group-col",
        action="append",
        default=None,
        help="column(s) that define a task; repeat for several (default: task)",
    )
    parser.add_argument(
        "--metric", default=None, help="keep only this metric of a mixed scores table"
    )
    parser.add_argument("--top-k", type=int, nargs="+", default=list(DEFAULT_TOP_K))
    parser.add_argument("--num-bootstrap", type=int, default=DEFAULT_NUM_BOOTSTRAP)
    parser.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", default=None, help="write the per-task table here (.csv/.parquet)"
    )
    parser.add_argument(
        "--format",
        choices=("markdown", "json"),
        default="markdown",
        help="what to print (default: markdown)",
    )


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ray-logme",
        description=(
            "Rank pre-trained models (timm, Hugging Face) for labelled downstream tasks with "
            "LogME, computed from frozen features on a Ray cluster."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ray-logme {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "refresh",
        help="extract features, score LogME and write the leaderboard (the nightly job)",
        description=(
            "Run the pipeline: snapshot tasks, extract features with Ray actors, reduce to LogME "
            "scores, write the leaderboard. Without --config it runs the embedded default (local "
            "Ray, ./ray-logme-store, shipped tasks and models, no download). Exits 1 if any "
            "(model, task) pair failed, after writing everything that succeeded."
        ),
    )
    p.add_argument(
        "--config",
        help="run config YAML, or the name of a shipped one (20newsgroups, reuters-r8, bbc-news, "
        "fashion-mnist; default: the embedded local.yaml)",
    )
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run")
    p.add_argument("--store", help="override the config's store URI")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a new local Ray")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_refresh)

    p = sub.add_parser(
        "score",
        help="LogME of one features file",
        description="LogME of features + labels in a Parquet, .npz or .npy (+ .labels.npy) file.",
    )
    p.add_argument("path", help="features file")
    p.add_argument("--kind", choices=["classification", "regression"], default="classification")
    p.add_argument("--features-column", default="features", help="column / array of features")
    p.add_argument("--label-column", default="label", help="column / array of labels")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "leaderboard",
        help="show the latest (or a given) run's leaderboard",
        description="Print a run's leaderboard as Markdown or CSV, optionally under a budget.",
    )
    p.add_argument("--config", help="config whose store to read (default: embedded local.yaml)")
    p.add_argument("--store", help="store URI to read instead of a config's")
    p.add_argument("--run", help="run id (default: the latest finished run)")
    p.add_argument("--runs", action="store_true", help="list the runs on the store")
    p.add_argument("--max-params", help="only models with at most this many parameters (50M, 1.5B)")
    p.add_argument("--min-throughput", type=float, help="only models extracting >= samples/s")
    p.add_argument("--max-feature-dim", type=int, help="only models with feature_dim <= this")
    p.add_argument("--format", choices=["md", "csv"], default="md")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser(
        "evaluate",
        help="how well scores rank models against ground-truth accuracies",
        description="Weighted Kendall tau, Kendall tau, Pearson and top-k relative accuracy, "
        "with bootstrap confidence intervals, of scores against ground truth.",
    )
    add_evaluate_arguments(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RunFailedError as exc:
        print(f"ray-logme: error: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except (RayLogMEError, ValueError, OSError) as exc:
        # Bad input (config, files, arguments): one line that names what and how to fix it.
        print(f"ray-logme: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
