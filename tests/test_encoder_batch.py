"""[encoder] batch_size = "auto": measured once per architecture, precision and device, within the memory budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import vecguard
from conftest import config, corpus
from vecguard.plugins import sentence_transformers as st
from vecguard.registry import Registry


def _encoder(options: dict) -> st.SentenceTransformerEncoder:
    return Registry.discover().build("encoder", "sentence-transformers", options, Path("."))


def test_auto_measures_the_memory_of_a_full_length_text_once_and_fits_the_batch_to_the_budget(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VECGUARD_CACHE_DIR", str(tmp_path / "cache"))
    encoder = _encoder({})
    per_text = encoder.bytes_per_text
    # all-MiniLM-L6-v2 at 256 tokens: 12 heads x 256^2 attention scores alone are 3 MiB a layer in fp32.
    assert 1 << 20 < per_text < 64 << 20
    free = encoder.free_memory()
    assert encoder.batch_size == max(1, min(st.BATCH_CEILING["cpu"], int(st.MEMORY_SHARE * free // per_text)))
    cache = tmp_path / "cache" / "encoder-batch-memory.json"
    assert list(json.loads(cache.read_text()).values()) == [per_text]
    written = cache.stat().st_mtime_ns

    again = _encoder({})  # the measurement is read back, not repeated
    assert again.bytes_per_text == per_text and cache.stat().st_mtime_ns == written

    monkeypatch.setattr(st.SentenceTransformerEncoder, "free_memory", lambda self: 5 * per_text)
    tight = _encoder({})
    assert tight.batch_size == 3  # 70% of the room for 5 texts
    vectors = tight.encode_documents([d["text"] for d in corpus()])
    assert vectors.shape == (len(corpus()), 384)


def test_a_fixed_batch_size_measures_nothing_and_a_bad_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECGUARD_CACHE_DIR", str(tmp_path / "cache"))
    assert _encoder({"batch_size": 16}).batch_size == 16
    assert not (tmp_path / "cache" / "encoder-batch-memory.json").exists()
    for bad in (0, "big", True, 2.5):
        with pytest.raises(vecguard.ConfigError, match='batch_size must be "auto" or a whole number >= 1'):
            vecguard.open(config("memory", encoder={"batch_size": bad}))


def test_a_batch_that_runs_out_of_memory_is_halved_and_retried_with_the_same_vectors() -> None:
    encoder = _encoder({"batch_size": 16})
    texts = [" ".join([d["text"]] * 40) for d in corpus()]  # full-length (truncated at 256 tokens): packed 16 a batch
    expected = encoder.encode_documents(texts)
    model_encode = encoder.model.encode
    tried: list[int] = []

    def encode_within_8(sentences, batch_size, **kwargs):  # the real model, on a device that holds 8 texts at a time
        tried.append(batch_size)
        if batch_size > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 96.00 MiB")
        return model_encode(sentences, batch_size=batch_size, **kwargs)

    encoder.model.encode = encode_within_8
    vectors = encoder.encode_documents(texts)
    assert tried == [16, 8, 8, 4] and encoder.batch_size == 8  # 20 texts: 16 (out of memory), then 8 + 8 + 4
    assert float((vectors * expected).sum(axis=1).min()) > 0.99999
    encoder.model.encode = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # anything else is not retried
        encoder.encode_documents(texts)
    assert encoder.batch_size == 8


def test_short_texts_are_packed_longest_first_into_batches_of_the_tokens_of_full_length_ones() -> None:
    encoder = _encoder({"batch_size": 4})
    full = " ".join(d["text"] for d in corpus())  # beyond the model's 256 tokens
    texts = [d["text"] for d in corpus()] + [full] * 5 + ["ok", "", "a b c"]
    # Measured apart from the encoder's own token_counts, which batches() uses: special tokens in, cut at 256.
    lengths = [min(256, len(encoder.model.tokenizer(t)["input_ids"])) for t in texts]
    assert encoder.token_counts(texts) == lengths
    batches = encoder.batches(texts)
    assert sorted(i for batch in batches for i in batch) == list(range(len(texts)))
    assert [lengths[i] for batch in batches for i in batch] == sorted(lengths, reverse=True)
    assert all(len(batch) * max(lengths[i] for i in batch) <= 4 * 256 for batch in batches)
    assert len(batches[0]) == 4 and max(len(batch) for batch in batches) > 4  # full-length 4 a batch; short ones more

    passes: list[int] = []
    model_encode = encoder.model.encode
    encoder.model.encode = lambda sentences, **kwargs: (
        passes.append(len(sentences)) or model_encode(sentences, **kwargs)
    )
    packed = encoder.encode_documents(texts)
    assert passes == [len(batch) for batch in batches] and len(passes) < len(texts) / 4
    one_by_one = encoder.encode_documents(texts, batch_size=1)
    assert float((packed * one_by_one).sum(axis=1).min()) > 0.99999  # each vector back in its text's place


def test_batch_documents_auto_is_64_or_the_encoders_batch_if_larger_and_a_number_is_kept() -> None:
    with vecguard.open(config("memory", chunking={"batch_documents": "auto"}, encoder={"batch_size": 16})) as engine:
        assert engine.batch_documents == 64
    with vecguard.open(config("memory", chunking={"batch_documents": "auto"}, encoder={"batch_size": 300})) as engine:
        assert engine.batch_documents == 300  # a GPU's batch: one add batch fills a forward pass
        assert engine.add(corpus()) == len(corpus())
    with vecguard.open(config("memory", chunking={"batch_documents": 5}, encoder={"batch_size": 300})) as engine:
        assert engine.batch_documents == 5
    for bad in (0, "many", 2.5):
        with pytest.raises(
            vecguard.ConfigError, match=r'\[chunking\] batch_documents must be "auto" or a whole number'
        ):
            vecguard.open(config("memory", chunking={"batch_documents": bad}))
