"""Entry point for ``ray job submit``: one nightly refresh of the model-hub leaderboard.

    RAY_AUTH_MODE=token RAY_ADDRESS=http://127.0.0.1:8265 ray job submit --working-dir . -- \
        python jobs/nightly_refresh.py --config jobs/configs/nightly.yaml [--resume RUN_ID]

(``RAY_AUTH_MODE=token``: Ray 2.60 heads require the cluster's token; see the README's "Token
authentication".)

Connects to the cluster the job was submitted to (``ray.init()`` reads ``RAY_ADDRESS``), runs
tasks -> extract -> reduce -> leaderboard, prints where the outputs are, and exits 1 if any
(model, task) pair failed (after writing everything that succeeded), 2 on a config error.
"""

from __future__ import annotations

import sys

from ray_logme.cli import main

if __name__ == "__main__":
    sys.exit(main(["refresh", *sys.argv[1:]]))
