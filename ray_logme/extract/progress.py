"""The run's one progress display: models done / total, rows/s, ETA, failures so far."""

from __future__ import annotations

import sys


class ExtractProgress:
    """One tqdm bar over every row the run computes (not a bar per model).

    On a terminal it redraws twice a second; written to a file or a job log it prints a line at
    most every 30 s. Disabled, it prints nothing.
    """

    def __init__(self, total_rows: int, total_models: int, enabled: bool) -> None:
        self.models_done = 0
        self.total_models = total_models
        self.failed_pairs = 0
        self.bar = None
        if enabled and total_rows > 0:
            from tqdm.auto import tqdm

            interactive = sys.stderr.isatty()
            self.bar = tqdm(
                total=total_rows,
                desc="extract",
                unit="row",
                dynamic_ncols=True,
                mininterval=0.5 if interactive else 30.0,
                leave=True,
            )
            self._postfix()

    def update(self, rows: int) -> None:
        if self.bar is not None and rows:
            self.bar.update(rows)

    def model_done(self) -> None:
        self.models_done += 1
        self._postfix()

    def pair_failed(self) -> None:
        self.failed_pairs += 1
        self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"models {self.models_done}/{self.total_models}, failed pairs {self.failed_pairs}",
                refresh=False,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
