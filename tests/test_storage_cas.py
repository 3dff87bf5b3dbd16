"""Tests of FeatureStore's compare-and-swap (``read_versioned`` / ``write_bytes_if``), local and
on the moto S3 server: what the ``leaderboard/LATEST`` pointer relies on (issue 16.5)."""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.timeout(300)


def test_write_bytes_if_replaces_only_the_version_read(store):
    assert store.read_versioned("p/pointer") == (None, None)
    assert store.write_bytes_if("p/pointer", b"one", version=None)
    assert not store.write_bytes_if("p/pointer", b"two", version=None)  # it exists now
    data, version = store.read_versioned("p/pointer")
    assert data == b"one" and version
    assert store.write_bytes_if("p/pointer", b"two", version=version)
    assert not store.write_bytes_if("p/pointer", b"three", version=version)  # stale version
    assert store.read_versioned("p/pointer")[0] == b"two"
    assert store.list_dir("p") == ["pointer"]  # no lock or temporary file is listed


def test_racing_swaps_lose_no_update(tmp_path):
    """Threads increment one counter by read-swap-retry: every increment lands exactly once.

    Local only: moto's server checks ``If-Match`` and stores the object in two steps without a
    lock, so a lost update there would be moto's (real S3 swaps atomically).
    """
    from ray_logme.storage import FeatureStore

    store = FeatureStore(str(tmp_path / "store"))
    threads_count, increments = 4, 25

    def increment():
        for _ in range(increments):
            while True:
                data, version = store.read_versioned("counter")
                value = int(data or b"0")
                if store.write_bytes_if("counter", str(value + 1).encode(), version=version):
                    break

    threads = [threading.Thread(target=increment) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert int(store.read_text("counter")) == threads_count * increments
