"""A PostgreSQL server restarted under load (its own throwaway cluster, crash-like `pg_ctl stop -m immediate`).

Labels: a writer thread labels products as fast as it can while the server dies and comes back. Every
label whose `set` returned (acknowledged) is in the store afterwards; a write while the server is down
fails with one line naming the store and saying it was not saved; writes succeed again after the restart
without reopening the store. Vectors: `put_many` during the outage waits for the server (an idempotent
upsert is retried until the store's timeout) and nothing is lost.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.errors import FclipError, LabelStoreError
from fclip_workbench.labelling.labels import LabelStore


def test_acknowledged_labels_survive_a_server_restart_under_load(own_postgres):
    store = LabelStore(own_postgres.url, timeout=5)
    acked: list[str] = []
    errors: list[BaseException] = []
    stop, after_restart = threading.Event(), threading.Event()
    acked_after: list[str] = []

    def label() -> None:
        i = 0
        while not stop.is_set():
            item = f"p{i}"
            i += 1
            try:
                store.set(item, "colour", "red", annotator="ana")
            except FclipError as e:
                errors.append(e)
                time.sleep(0.05)
                continue
            acked.append(item)
            if after_restart.is_set():
                acked_after.append(item)

    writer = threading.Thread(target=label)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 20 and time.monotonic() < deadline:  # under load: labels being acknowledged
            time.sleep(0.05)
        before = len(acked)
        own_postgres.restart("immediate")  # a crash: whatever was acknowledged must come back from the WAL
        after_restart.set()
        deadline = time.monotonic() + 30
        while len(acked_after) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        writer.join(60)
    store.close()
    assert before >= 20, "the writer was not under load before the restart"
    assert len(acked_after) >= 20, f"writes did not resume after the restart: {errors[-1:]}"
    again = LabelStore(own_postgres.url, timeout=5)
    stored = again.current_events("colour", acked)
    again.close()
    lost = [i for i in acked if stored[i][0] != "red"]
    assert lost == [], f"{len(lost)} acknowledged labels lost: {lost[:5]}"
    for e in errors:  # the outage's failures: one line each, a label store error naming the store
        assert isinstance(e, LabelStoreError) and "\n" not in str(e), repr(e)
        assert f":{own_postgres.port}/postgres" in str(e) and ("not saved" in str(e) or "cannot be opened" in str(e))


def test_vector_writes_wait_for_a_restarting_server(own_postgres):
    store = EmbeddingStore(own_postgres.url, timeout=60)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((40, 16)).astype(np.float32)  # (40, 16)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    keys = [f"k{i}" for i in range(40)]
    assert store.put_many("m", "image", keys[:20], vecs[:20], normalised=True) == 20
    own_postgres.stop("immediate")
    restarter = threading.Timer(2.0, own_postgres.start)  # down for 2 s while the next batch is written
    restarter.start()
    try:
        assert store.put_many("m", "image", keys[20:], vecs[20:], normalised=True) == 20
    finally:
        restarter.join(120)
    got = EmbeddingStore(own_postgres.url).get_many("m", "image", keys)
    assert len(got) == 40
    np.testing.assert_array_equal(np.stack([got[k] for k in keys]), vecs)
