"""Check a run of the embedded default against linear probes on its own stored features.

    ray-logme refresh                                   # the embedded default
    python benchmarks/check_default.py                  # its latest run in ./ray-logme-store
    python benchmarks/check_default.py --store S --run RUN_ID

Prints, per task, each model's LogME and its 5-fold cross-validated linear-probe score on the
same features (accuracy for classification), Kendall tau between the two, and whether every
pre-trained model beats its family's random-init twin under both (the README's figures; the
same checks as tests/test_default_ranking.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from ray_logme.evaluate.probe import agreement, probe_run
from ray_logme.pipeline import list_runs, load_run
from ray_logme.storage import FeatureStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="./ray-logme-store")
    parser.add_argument("--run", help="run id (default: the latest finished run)")
    args = parser.parse_args(argv)
    store = FeatureStore(args.store)
    run_id = args.run or next(r["run_id"] for r in list_runs(store) if r.get("state") == "ok")
    frame = probe_run(store, load_run(store, run_id))
    tags = [json.loads(value) for value in frame["tags"]]
    frame["family"] = [tag.get("family", "") for tag in tags]
    frame["random_init"] = [tag.get("note") == "random-init" for tag in tags]
    tau = agreement(frame).set_index("task")["kendall_tau"]
    ok = True
    print(f"run {run_id}")
    for task, group in frame.groupby("task"):
        print(f"\n{task} (n={group['num_samples'].iloc[0]}, Kendall tau {tau[task]:.2f})\n")
        print("| model | LogME | probe accuracy | beats its random-init twin |")
        print("|---|---|---|---|")
        for row in group.sort_values("logme", ascending=False).itertuples():
            twin = group[(group["family"] == row.family) & group["random_init"]]
            if row.random_init or twin.empty:
                verdict = "(twin)" if row.random_init else "no twin"
            else:
                beats = row.logme > twin["logme"].iloc[0] and row.probe > twin["probe"].iloc[0]
                ok &= bool(beats)
                verdict = "yes" if beats else "NO"
            print(f"| {row.model} | {row.logme:+.3f} | {row.probe:.3f} | {verdict} |")
        ok &= bool(tau[task] >= 0.6)
    print(f"\nall twins beaten and tau >= 0.6 on every task: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
