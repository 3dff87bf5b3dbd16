"""Which run's leaderboard is the published one: the ``leaderboard/LATEST`` pointer.

Every run writes its leaderboard once to its own folder (``runs/{run_id}/leaderboard/``), then
publishes it (:func:`publish_latest`):

1. **Move the pointer.** ``leaderboard/LATEST`` is a small JSON object (:class:`LatestPointer`):
   the run id, the run's *start* time, its folder and the SHA-256 of each of its files. It moves
   by compare-and-swap (:meth:`~ray_logme.storage.FeatureStore.write_bytes_if`: ``If-Match`` on
   S3, a locked rename locally) and only forward: to a run that started later than the run it
   names (ties: the larger run id), or to the same run again (a resume that rewrote its files).
   So "latest" is the finished run with the newest start time, whichever finishes last, and
   resuming an older run never makes it latest.
2. **Copy the files** to ``leaderboard/`` for static hosting and for readers of one file. Each
   copy is a compare-and-swap too, made only while the pointer still names this run, and the
   version of the copy is read *before* the pointer is checked: a publisher that lost the
   pointer meanwhile either fails its swap or is overwritten by the winner, so once publishers
   stop the copies are all the pointer's run's. While one is copying, a reader of several files
   can see two runs' files side by side; every file names its run (the tables'
   ``leaderboard_run_id`` column, the page and the summary), and the pointer's digests say
   which bytes belong.

Readers of several files resolve the pointer (:func:`read_latest`) and read the folder it names,
which no other run ever writes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray_logme.errors import StorageError
from ray_logme.storage import layout

logger = logging.getLogger(__name__)

#: How many times a publisher re-reads and retries a swap that another publisher won.
_MAX_SWAP_ATTEMPTS = 50


@dataclass(frozen=True)
class LatestPointer:
    """The content of ``leaderboard/LATEST``.

    ``timestamp`` is the run's start time (``run.json``'s ``timestamp``, ISO 8601); ``folder``
    is the run's leaderboard folder relative to the store root; ``files`` maps each file name
    in it to the SHA-256 hex digest of its bytes.
    """

    run_id: str
    timestamp: str
    folder: str
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "timestamp": self.timestamp,
                "folder": self.folder,
                "files": dict(sorted(self.files.items())),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> LatestPointer:
        """Parse a pointer; ``ValueError`` when it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the pointer is not a JSON object")
        run_id = layout.check_key(data.get("run_id"), "the pointer's run_id")
        files = data.get("files") or {}
        if not isinstance(files, dict):
            raise ValueError("the pointer's files is not an object")
        return cls(
            run_id=run_id,
            timestamp=str(data.get("timestamp") or ""),
            folder=str(data.get("folder") or layout.run_leaderboard_dir(run_id)),
            files={str(name): str(digest) for name, digest in files.items()},
        )

    def order(self) -> tuple[dt.datetime, str]:
        """What "later" means: the start time (missing or unreadable: earliest), then run id."""
        return _start_time(self.timestamp), self.run_id


def _start_time(timestamp: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(timestamp)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def file_digest(data: bytes) -> str:
    """The SHA-256 hex digest :class:`LatestPointer` records for a file's bytes."""
    return hashlib.sha256(data).hexdigest()


def read_latest(store: Any) -> LatestPointer | None:
    """The pointer on ``store``, or ``None`` when there is none or it cannot be read (warned)."""
    raw, _ = store.read_versioned(layout.latest_pointer())
    return _parse(store, raw)


def _parse(store: Any, raw: bytes | None) -> LatestPointer | None:
    if raw is None:
        return None
    try:
        return LatestPointer.from_json(raw)
    except ValueError as exc:
        logger.warning("ignoring the unreadable %s: %s", store.uri_of(layout.latest_pointer()), exc)
        return None


def publish_latest(
    store: Any, run_id: str, timestamp: str, files: Mapping[str, bytes]
) -> dict[str, str]:
    """Publish the leaderboard ``files`` of ``run_id`` (already written to its own folder).

    Moves ``leaderboard/LATEST`` to the run if it started (``timestamp``) later than the run
    the pointer names, then copies ``files`` (``{file name: bytes}``) to ``leaderboard/`` while
    the pointer names it (see the module docstring). Returns ``{relpath: uri}`` of what it
    wrote, pointer first; empty when a later run is the latest. ``store`` needs
    ``read_versioned``, ``write_bytes_if`` and ``uri_of`` (``ray_logme.storage.FeatureStore``).
    """
    mine = LatestPointer(
        run_id,
        timestamp,
        layout.run_leaderboard_dir(run_id),
        {name: file_digest(data) for name, data in files.items()},
    )
    pointer = layout.latest_pointer()
    if not _move_pointer(store, mine):
        return {}
    copies = {
        layout.leaderboard_file(layout.LATEST_LEADERBOARD_DIR, name): data
        for name, data in files.items()
    }
    pending = dict(copies)
    # Copy, then read the copies back: a server whose conditional PUT is not atomic (or the
    # storage option conditional_writes: false) can let a racing publisher's copy land last.
    for _ in range(_MAX_SWAP_ATTEMPTS):
        for relpath, data in pending.items():
            if not _copy_while_latest(store, relpath, data, mine):
                logger.info("run %s: a later run took %s while copying", run_id, pointer)
                return {}
        pending = {
            relpath: data
            for relpath, data in copies.items()
            if store.read_versioned(relpath)[0] != data
        }
        if not pending:
            return {pointer: store.uri_of(pointer)} | {
                relpath: store.uri_of(relpath) for relpath in copies
            }
    raise StorageError(
        f"the copies under {store.uri_of(layout.LATEST_LEADERBOARD_DIR)} kept changing under "
        f"run {run_id}'s compare-and-swap ({_MAX_SWAP_ATTEMPTS} tries); publish again"
    )


def _move_pointer(store: Any, mine: LatestPointer) -> bool:
    """Swap the pointer to ``mine`` unless it names a later run; whether it names ``mine``.

    After a successful swap the pointer is read again, so a server whose conditional PUT is not
    atomic cannot leave it on an earlier run either.
    """
    relpath = layout.latest_pointer()
    for attempt in range(_MAX_SWAP_ATTEMPTS):
        raw, version = store.read_versioned(relpath)
        current = _parse(store, raw)
        if current == mine:
            return True
        another_run = current is not None and current.run_id != mine.run_id
        if another_run and current.order() > mine.order():
            logger.info(
                "run %s (started %s) is not published as the latest: %s names run %s, started %s",
                mine.run_id,
                mine.timestamp or "at an unknown time",
                store.uri_of(relpath),
                current.run_id,
                current.timestamp,
            )
            return False
        if not store.write_bytes_if(relpath, mine.to_json().encode("utf-8"), version=version):
            time.sleep(min(0.2, 0.005 * 2**attempt))  # another publisher swapped first
    raise StorageError(
        f"{store.uri_of(relpath)} kept changing under run {mine.run_id}'s compare-and-swap "
        f"({_MAX_SWAP_ATTEMPTS} tries); publish again"
    )


def _copy_while_latest(store: Any, relpath: str, data: bytes, mine: LatestPointer) -> bool:
    """Swap ``relpath`` to ``data`` while the pointer names ``mine``; whether it did.

    The copy's version is read before the pointer: if the pointer moves on after the check, the
    new latest run's write of this copy either comes after ours (and wins) or changes the
    version, and then our swap fails and the next check stops us.
    """
    for attempt in range(_MAX_SWAP_ATTEMPTS):
        _, version = store.read_versioned(relpath)
        if read_latest(store) != mine:
            return False
        if store.write_bytes_if(relpath, data, version=version):
            return True
        time.sleep(min(0.2, 0.005 * 2**attempt))
    raise StorageError(
        f"{store.uri_of(relpath)} kept changing under run {mine.run_id}'s compare-and-swap "
        f"({_MAX_SWAP_ATTEMPTS} tries); publish again"
    )
