"""The thread policy: passive OpenMP waiting unless the user chose, one torch thread for a query, batches on all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from vecguard.plugins import sentence_transformers as st
from vecguard.registry import Registry

PROBE = (
    "import json, os, sys, vecguard; "
    "print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules, 'faiss' in sys.modules]))"
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"), ({"GOMP_SPINCOUNT": "300000"}, None)],
)
def test_import_sets_passive_waiting_before_torch_or_faiss_load_unless_the_user_chose(
    env: dict[str, str], expected: str | None
) -> None:
    # Not this process's environment: importing vecguard here has already set the variable.
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env={**clean, **env}, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [expected, False, False]


@pytest.fixture
def two_threads() -> Iterator[None]:
    """torch on 2 threads while the test builds its encoder (its batch count), whatever this machine's default."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_one_text_encodes_on_one_torch_thread_and_batches_on_the_count_torch_had_at_open(
    two_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = Registry.discover().build("encoder", "sentence-transformers", {"batch_size": 16}, Path("."))
    seen: list[int] = []
    model_encode = encoder.model.encode

    def counting(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return model_encode(*args, **kwargs)

    monkeypatch.setattr(encoder.model, "encode", counting)
    encoder.encode_queries(["a cookie without the HttpOnly flag"])
    assert seen == [1] and torch.get_num_threads() == 2  # the caller's count is restored
    encoder.encode_documents(["first text", "second text"])
    assert seen[1:] == [2]

    # Another thread keeps its own count while this one holds one thread for a query ...
    ready, checked, other = threading.Event(), threading.Event(), []

    def bystander() -> None:
        torch.get_num_threads()  # torch's per-thread setup, as any thread that has encoded before
        ready.set()
        checked.wait(30)
        other.append(torch.get_num_threads())

    thread = threading.Thread(target=bystander)
    thread.start()
    ready.wait(30)
    with st.torch_threads(1, restore=True):
        checked.set()
        thread.join(30)
    assert other == [2]

    # ... and a thread that first runs torch while a query holds one thread (it inherits 1) still batches on 2.
    def born_during_a_query() -> None:
        encoder.encode_documents(["first text", "second text"])

    with st.torch_threads(1, restore=True):
        thread = threading.Thread(target=born_during_a_query)
        thread.start()
        thread.join(60)
    assert seen[2:] == [2]
