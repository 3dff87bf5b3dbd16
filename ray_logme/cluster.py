"""Connecting to Ray: the one place that calls ``ray.init``.

The entry points (``ray-logme``, ``jobs/nightly_refresh.py`` through it, and
:func:`ray_logme.refresh` for scripts) connect once; the stages then run on whatever cluster is
connected and never start one themselves.
"""

from __future__ import annotations

import logging
import os


def connect_ray(
    address: str | None = None, num_cpus: int | None = None, verbose: bool = False
) -> None:
    """Attach to ``address`` / ``RAY_ADDRESS`` if given, else start a small local Ray.

    A no-op when this process is already connected. A new local Ray has no dashboard
    (``num_cpus``: its CPUs; default all). Unless ``verbose``, the console gets only what the
    user needs: Ray logs at ERROR and worker output is not forwarded (errors of models and
    tasks are in the status table; ``-v`` shows everything).
    """
    import ray

    if ray.is_initialized():
        return
    level = logging.INFO if verbose else logging.ERROR
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=verbose, logging_level=level)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            configure_logging=True,
            logging_level=level,
            log_to_driver=verbose,
        )
