"""Encoder precision: part of the identity, "auto" takes half precision only where it is exact, the guard sees it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import vecguard
from conftest import config, corpus
from vecguard.plugins.sentence_transformers import native_bf16_cpu

AUTO_EXPECTED = "bf16" if native_bf16_cpu() else "fp32"


def test_an_unknown_precision_is_refused_with_the_choices() -> None:
    with pytest.raises(
        vecguard.ConfigError, match="precision must be one of 'fp32', 'bf16', 'fp16', 'auto', got 'int4'"
    ):
        vecguard.open(config("memory", encoder={"precision": "int4"}))


def test_fp16_on_a_cpu_is_refused_with_the_alternative() -> None:
    with pytest.raises(
        vecguard.ConfigError, match='precision "fp16" runs on a CUDA device, not \'cpu\'; on a CPU use "bf16"'
    ):
        vecguard.open(config("memory", encoder={"precision": "fp16"}))


def test_auto_precision_is_recorded_and_the_guard_accepts_it_on_an_fp32_collection(tmp_path: Path) -> None:
    with vecguard.open(config("faiss", tmp_path / "index")) as fp32:
        fp32.add(corpus())
        fp32_identity = fp32.manifest["encoder"]
        reference = fp32.encoder.encode_documents([d["text"] for d in corpus()])
        expected = [h.id for h in fp32.search("volcanic ash grounded flights", k=5, mode="dense")]

    with vecguard.open(config("faiss", tmp_path / "index", encoder={"precision": "auto"})) as auto:
        identity = auto.encoder.identity()
        assert identity.precision == AUTO_EXPECTED
        if AUTO_EXPECTED == "fp32":
            assert identity.fingerprint == fp32_identity["fingerprint"] and auto.guard_report.status == "ok"
            return
        assert auto.encoder.probe_cosine >= 0.999
        assert identity.fingerprint != fp32_identity["fingerprint"], "precision must take part in the fingerprint"
        # A different fingerprint sends the guard to the probe: bf16 lands on the same space, so it warns and opens.
        assert auto.guard_report.status == "warn" and auto.guard_report.min_cosine >= 0.999
        vectors = auto.encoder.encode_documents([d["text"] for d in corpus()])
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # re-normalised after the cast
        assert float(np.min(np.sum(vectors * reference, axis=1))) >= 0.999
        assert [h.id for h in auto.search("volcanic ash grounded flights", k=5, mode="dense")] == expected


def test_a_collection_built_in_bf16_records_it_in_its_manifest(tmp_path: Path) -> None:
    with vecguard.open(config("faiss", tmp_path / "index", encoder={"precision": "bf16"})) as engine:
        engine.add(corpus()[:3])
        assert engine.manifest["encoder"]["precision"] == "bf16"
    with vecguard.open(config("faiss", tmp_path / "index", encoder={"precision": "bf16"})) as again:
        assert again.guard_report.status == "ok"
