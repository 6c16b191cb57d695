"""The version guard, reproducing the incident: a collection reopened in a new process with an
encoder that no longer produces the space it was built in must be refused before any query.

Real parts only: the bundled all-MiniLM-L6-v2 and variants of it made here from its own files
(tokenizer no longer lowercases, 8-token truncation, perturbed weights, a 128-wide Dense head).
One collection per store is built once per module; every reopen that matters runs in a fresh
interpreter, like the restart in the incident.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import vecguard
from conftest import copy_model, perturbed_model
from vecguard.plugins.sentence_transformers import bundled_model_path

STORES = ["faiss", "memory", "qdrant"]  # qdrant: the embedded engine, its manifest in manifest.json
CHUNKING = {"tokens": 64, "overlap": 8}

DOCS = [
    ("pw", "How to reset a forgotten password using the account recovery email link.", "support"),
    ("refund", "Customers may return unused items within thirty days for a full refund.", "support"),
    (
        "ship",
        "Storms closed the northern warehouse, so parcels to the "
        "coast arrive a week late. Order ORD-2024-00017 is affected.",
        "logistics",
    ),
    (
        "bof",
        "Writing past the end of a fixed-size buffer corrupts "
        "adjacent memory and can run attacker code (CVE-2022-24045).",
        "security",
    ),
    ("sqli", "Building SQL queries by concatenating user input lets attackers read or change tables.", "security"),
    ("xss", "Reflecting untrusted input into a web page lets scripts run in other users' browsers.", "security"),
    ("photo", "Plants turn sunlight, water and carbon dioxide into sugar and release oxygen.", "science"),
    ("volcano", "Magma rising through the crust erupts as lava, ash and volcanic gases.", "science"),
    ("jazz", "Jazz grew in New Orleans from blues and ragtime, with improvisation at its heart.", "culture"),
    ("bread", "Knead the dough, let the yeast rise overnight, then bake in a very hot oven.", "food"),
    ("marathon", "Build weekly mileage slowly and rest well before a long distance race.", "sport"),
    ("tax", "File the annual income tax return before the deadline to avoid a late penalty.", "finance"),
    (
        "appeal",
        "A party who loses at trial may appeal to a higher court on points of law, e.g. under 42 U.S.C. § 1983.",
        "law",
    ),
    ("coffee", "Grind the beans fresh and pour water just off the boil over the grounds.", "food"),
    ("solar", "Photovoltaic cells on the roof convert daylight into electricity for the house.", "science"),
    ("vaccine", "A vaccine trains the immune system to recognise a virus before an infection.", "health"),
    ("chess", "The Sicilian Defence answers the king's pawn with a pawn to c5.", "sport"),
    ("sleep", "A dark, cool bedroom and a regular bedtime help adults sleep through the night.", "health"),
    ("rust", "Each value in Rust has one owner, and memory is freed when the owner goes out of scope.", "code"),
    ("berlin", "Der schnelle braune Fuchs springt über den faulen Hund in Berlin.", "culture"),
]
# A document long enough to be cut into several 64-token chunks, so chunking really matters.
LONG_DOC = " ".join(
    f"Section {i}: the tenant must give written notice {i + 1} months before leaving the flat." for i in range(12)
)
QUERIES = [
    ("my parcel is late because of the weather", "hybrid"),
    ("ORD-2024-00017", "hybrid"),
    ("memory safety bugs attackers exploit", "dense"),
    ("how long before moving out must the tenant tell the landlord", "dense"),
]
EXPECTED_TOP = {"my parcel is late because of the weather": "ship", "ORD-2024-00017": "ship"}


def corpus() -> list[dict[str, Any]]:
    docs = [{"id": i, "text": t, "metadata": {"topic": topic, "n": n}} for n, (i, t, topic) in enumerate(DOCS)]
    docs.append({"id": "lease", "text": LONG_DOC, "metadata": {"topic": "law", "n": len(DOCS)}})
    return docs


def config(store: str, path: Path, model: str = "bundled", **tables: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "encoder": {"plugin": "sentence-transformers", "model": model},
        "store": {"plugin": store, "path": str(path)},
        "chunking": dict(CHUNKING),
    }
    for name, table in tables.items():
        cfg.setdefault(name, {}).update(table)
    return cfg


def search_all(engine: vecguard.Engine) -> dict[str, list[list[Any]]]:
    return {q: [[h.id, h.score] for h in engine.search(q, k=5, mode=mode)] for q, mode in QUERIES}


# ------------------------------------------------------------------ the fresh process

# Opens each config in turn in a new interpreter and writes what happened as JSON: the error class
# and message, or the guard report and the search results. Log records (WARNING and up) are kept
# per case; they also go to stderr.
FRESH_PROCESS = textwrap.dedent(
    """
    import json, logging, sys
    jobs = json.load(open(sys.argv[1], encoding="utf-8"))
    queries = json.load(open(sys.argv[2], encoding="utf-8"))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append([record.levelname, record.name, record.getMessage()])
    logging.getLogger().addHandler(Keep(logging.WARNING))
    import vecguard
    out = {}
    for name, cfg in jobs.items():
        del records[:]
        entry = {"error": None, "error_classes": [], "message": None}
        try:
            engine = vecguard.open(cfg)
        except vecguard.VecguardError as exc:
            entry.update(error=type(exc).__name__, message=str(exc),
                         error_classes=[c.__name__ for c in type(exc).__mro__])
        else:
            try:
                report = engine.guard_report
                entry["report"] = report.as_dict() if report is not None else None
                entry["count"] = engine.count()
                entry["results"] = {
                    q: [[h.id, h.score] for h in engine.search(q, k=5, mode=mode)] for q, mode in queries
                }
            finally:
                engine.close()
        entry["log"] = list(records)
        out[name] = entry
    json.dump(out, open(sys.argv[3], "w", encoding="utf-8"))
    """
)


def run(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def vecguard_command() -> list[str]:
    script = Path(sys.executable).with_name("vecguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vecguard.cli"]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fingerprint cache of this module: a tmp folder, for this process and every subprocess."""
    path = tmp_path_factory.mktemp("vecguard-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VECGUARD_CACHE_DIR", str(path))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield path


@pytest.fixture(autouse=True)
def _same_cache_in_every_test(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECGUARD_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def env(cache_dir: Path) -> dict[str, str]:
    full = dict(os.environ)
    full.update(VECGUARD_CACHE_DIR=str(cache_dir), HF_HUB_OFFLINE="1", PYTHONIOENCODING="utf-8")
    return full


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    """Variants of the bundled model, made from one copy of its folder.

    The 90 MB weights are hard-linked from that copy (never from the installed package) where a
    variant keeps them; only small files are rewritten, and a variant with new weights first unlinks.
    """
    root = tmp_path_factory.mktemp("models")
    pristine = root / "pristine"
    shutil.copytree(bundled_model_path(), pristine)

    def variant(name: str) -> Path:
        return copy_model(pristine, root / name)

    def edit_json(path: Path, **changes: Any) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.update(changes)
        path.write_text(json.dumps(data), encoding="utf-8")

    # (b1) the tokenizer no longer lowercases: same weights, different token ids for cased text.
    cased = variant("cased")
    tokenizer = json.loads((cased / "tokenizer.json").read_text(encoding="utf-8"))
    assert tokenizer["normalizer"]["type"] == "BertNormalizer" and tokenizer["normalizer"]["lowercase"] is True
    tokenizer["normalizer"]["lowercase"] = False
    (cased / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    edit_json(cased / "tokenizer_config.json", do_lower_case=False)

    # (b2) truncation at 8 tokens.
    short = variant("short")
    edit_json(short / "sentence_bert_config.json", max_seq_length=8)

    # (c) another model of the same dimension: every float weight perturbed with a fixed seed.
    perturbed = perturbed_model(pristine, root / "perturbed")

    # (d) another dimension: a real 384 -> 128 Dense head after pooling.
    import torch
    from sentence_transformers.models import Dense

    dim128 = variant("dim128")
    generator = torch.Generator().manual_seed(7)
    dense = Dense(
        384,
        128,
        bias=False,
        activation_function=torch.nn.Identity(),
        init_weight=torch.randn(128, 384, generator=generator) / 384**0.5,
    )
    (dim128 / "2_Dense").mkdir()
    dense.save(str(dim128 / "2_Dense"))
    modules = [
        m for m in json.loads((dim128 / "modules.json").read_text(encoding="utf-8")) if "Normalize" not in m["type"]
    ]
    modules.append(
        {
            "idx": len(modules),
            "name": str(len(modules)),
            "path": "2_Dense",
            "type": "sentence_transformers.models.Dense",
        }
    )
    (dim128 / "modules.json").write_text(json.dumps(modules), encoding="utf-8")

    return {"pristine": pristine, "cased": cased, "short": short, "perturbed": perturbed, "dim128": dim128}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Per store: the shared collection (built with the bundled model, then closed), the results
    before closing, a copy whose manifest simulates a harmless library upgrade, and a collection
    written with normalize = false."""
    out: dict[str, dict[str, Any]] = {}
    for store in STORES:
        root = tmp_path_factory.mktemp(f"built-{store}")
        path = root / "idx"
        with vecguard.open(config(store, path)) as engine:
            assert engine.add(corpus()) == len(DOCS) + 1
            assert engine.count() == len(DOCS) + 1
            assert engine.count_chunks() > len(DOCS) + 1, "the long document should make several chunks"
            before = search_all(engine)
        # (f) same vectors, but the manifest says other library versions and another fingerprint.
        harmless = root / "harmless"
        shutil.copytree(path, harmless)
        manifest_file = harmless / ("vecguard/manifest.json" if store == "qdrant" else "manifest.json")
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        assert manifest["libraries"], "the manifest should record library versions"
        manifest["libraries"] = {name: "0.0.0+simulated" for name in manifest["libraries"]}
        live_fingerprint = manifest["encoder"]["fingerprint"]
        simulated_fingerprint = hashlib.sha256(b"a library upgrade that kept the vectors").hexdigest()
        manifest["encoder"]["fingerprint"] = simulated_fingerprint
        manifest_file.write_text(json.dumps(manifest), encoding="utf-8")
        # (e) written without normalisation.
        unnormalized = root / "unnormalized"
        with vecguard.open(config(store, unnormalized, encoder={"normalize": False})) as engine:
            engine.add(corpus()[:5])
        out[store] = {
            "path": path,
            "before": before,
            "harmless": harmless,
            "unnormalized": unnormalized,
            "fingerprints": (simulated_fingerprint, live_fingerprint),
        }
    return out


@pytest.fixture(scope="module")
def fresh(
    built: dict[str, dict[str, Any]],
    models: dict[str, Path],
    env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    """Every reopen of the incident, in one new interpreter: {store: {case: outcome}}."""
    work = tmp_path_factory.mktemp("fresh")
    jobs: dict[str, Any] = {}
    for store, b in built.items():
        cases = {
            "same": config(store, b["path"]),
            "cased": config(store, b["path"], str(models["cased"])),
            "short": config(store, b["path"], str(models["short"])),
            "perturbed": config(store, b["path"], str(models["perturbed"])),
            "dim128": config(store, b["path"], str(models["dim128"])),
            "unnormalized": config(store, b["unnormalized"]),
            "harmless": config(store, b["harmless"]),
        }
        jobs.update({f"{store}/{case}": cfg for case, cfg in cases.items()})
    (work / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    (work / "queries.json").write_text(json.dumps(QUERIES), encoding="utf-8")
    (work / "probe.py").write_text(FRESH_PROCESS, encoding="utf-8")
    done = run(
        [
            sys.executable,
            str(work / "probe.py"),
            str(work / "jobs.json"),
            str(work / "queries.json"),
            str(work / "out.json"),
        ],
        env,
    )
    assert done.returncode == 0, f"the fresh process failed:\n{done.stderr[-4000:]}"
    outcomes = json.loads((work / "out.json").read_text(encoding="utf-8"))
    return {
        store: {
            case: outcomes[f"{store}/{case}"]
            for case in ("same", "cased", "short", "perturbed", "dim128", "unnormalized", "harmless")
        }
        for store in built
    }


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return request.param


def _refused(outcome: dict[str, Any]) -> str:
    assert outcome["error"] is not None, f"the collection opened but should have been refused: {outcome.get('report')}"
    return outcome["message"]


def assert_same_results(after: dict[str, list[list[Any]]], before: dict[str, list[list[Any]]]) -> None:
    assert set(after) == set(before)
    for query, hits in before.items():
        assert [h[0] for h in after[query]] == [h[0] for h in hits], f"ranking changed for {query!r}"
        np.testing.assert_allclose(
            [h[1] for h in after[query]],
            [h[1] for h in hits],
            rtol=0,
            atol=1e-6,
            err_msg=f"scores changed for {query!r}",
        )


# ------------------------------------------------------------------ (a)-(f), in a fresh process


def test_baseline_results_are_meaningful(built: dict[str, dict[str, Any]], store: str) -> None:
    before = built[store]["before"]
    for query, top in EXPECTED_TOP.items():
        assert before[query][0][0] == top
    assert before["how long before moving out must the tenant tell the landlord"][0][0] == "lease"
    assert all(len(hits) == 5 for hits in before.values())


def test_a_same_model_reopens_with_identical_results(fresh, built, store: str) -> None:
    outcome = fresh[store]["same"]
    assert outcome["error"] is None, outcome["message"]
    assert outcome["report"]["status"] == "ok"
    assert outcome["report"]["mean_cosine"] is None, "an unchanged fingerprint needs no probe"
    assert outcome["count"] == len(DOCS) + 1
    assert not [r for r in outcome["log"] if r[0] in ("WARNING", "ERROR") and r[1].startswith("vecguard")], outcome[
        "log"
    ]
    assert_same_results(outcome["results"], built[store]["before"])


def _assert_drift(message: str, outcome: dict[str, Any]) -> float:
    assert outcome["error"] == "EmbeddingDriftError", message
    assert "CompatibilityError" in outcome["error_classes"]
    assert "vecguard reindex" in message
    found = re.search(r"mean (0\.\d+), min (-?\d\.\d+)", message)
    assert found and "mean 0." in message, f"the measured cosine is missing: {message}"
    mean = float(found.group(1))
    assert mean < 0.99
    return mean


def test_b1_tokenizer_that_no_longer_lowercases_is_refused(fresh, store: str) -> None:
    outcome = fresh[store]["cased"]
    message = _refused(outcome)
    _assert_drift(message, outcome)


def test_b2_truncation_to_8_tokens_is_refused(fresh, store: str) -> None:
    """Refused: the collection must not open. (What it is refused *as* is the next test.)"""
    outcome = fresh[store]["short"]
    message = _refused(outcome)
    assert "CompatibilityError" in outcome["error_classes"]
    assert "vecguard reindex" in message


def test_b2_truncation_to_8_tokens_is_reported_as_drift(fresh, store: str) -> None:
    outcome = fresh[store]["short"]
    _assert_drift(_refused(outcome), outcome)


def test_c_other_weights_of_the_same_dimension_are_refused(fresh, store: str) -> None:
    outcome = fresh[store]["perturbed"]
    _assert_drift(_refused(outcome), outcome)


def test_d_another_dimension_is_refused(fresh, store: str) -> None:
    outcome = fresh[store]["dim128"]
    message = _refused(outcome)
    assert outcome["error"] == "DimensionError", message
    assert "384" in message and "128" in message
    assert "vecguard reindex" in message


def test_e_unnormalized_collection_is_refused_as_incompatible_not_drift(fresh, store: str) -> None:
    outcome = fresh[store]["unnormalized"]
    message = _refused(outcome)
    assert outcome["error"] == "CompatibilityError", message
    assert "normalized" in message or "inner_product" in message, message


def test_f_harmless_upgrade_opens_with_a_warning_naming_the_change(fresh, built, store: str) -> None:
    outcome = fresh[store]["harmless"]
    assert outcome["error"] is None, outcome["message"]
    report = outcome["report"]
    assert report["status"] == "warn"
    assert report["mean_cosine"] >= 0.99 and report["min_cosine"] >= 0.98
    warnings = [r for r in outcome["log"] if r[0] == "WARNING" and r[1] == "vecguard.guard"]
    assert len(warnings) == 1, outcome["log"]
    text = warnings[0][2]
    stored, live = built[store]["fingerprints"]
    assert f"encoder fingerprint: {stored[:12]!r} -> {live[:12]!r}" in text, text
    assert "library torch" in text and "0.0.0+simulated" in text, text
    assert_same_results(outcome["results"], built[store]["before"])


# ------------------------------------------------------------------ guard settings (in process)


def _shared(built, store: str = "faiss") -> Path:
    return built[store]["path"]


def test_warn_mode_opens_a_drifted_collection_but_logs_an_error(built, models, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="vecguard")
    cfg = config("faiss", _shared(built), str(models["cased"]), guard={"mode": "warn"})
    with vecguard.open(cfg) as engine:
        assert engine.guard_report.status == "refused"
        assert engine.guard_report.error is vecguard.EmbeddingDriftError
        hits = engine.search("my parcel is late because of the weather", k=5)
        assert len(hits) == 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "vecguard.guard"]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    assert "WARN mode" in errors[0].getMessage() and "mean 0." in errors[0].getMessage()


def test_warn_mode_still_refuses_another_dimension(built, models) -> None:
    cfg = config("faiss", _shared(built), str(models["dim128"]), guard={"mode": "warn"})
    with pytest.raises(vecguard.DimensionError):
        vecguard.open(cfg)


def test_thresholds_are_configurable(built, models, caplog) -> None:
    cased = str(models["cased"])
    engine = vecguard.Engine(vecguard.load_config(config("faiss", _shared(built), cased)), check_guard=False)
    try:
        report = engine.check()
    finally:
        engine.close()
    mean, worst = report.mean_cosine, report.min_cosine
    assert report.status == "refused" and mean < 0.99 and worst < mean

    caplog.set_level(logging.WARNING, logger="vecguard")
    loose = {"min_mean_cosine": round(mean - 0.05, 4), "min_cosine": round(worst - 0.05, 4)}
    with vecguard.open(config("faiss", _shared(built), cased, guard=loose)) as engine:
        assert engine.guard_report.status == "warn"
        assert engine.guard_report.mean_cosine == pytest.approx(mean, abs=1e-6)
    assert any(r.levelno == logging.WARNING and "encoder changed" in r.getMessage() for r in caplog.records)

    # Each threshold refuses on its own.
    for strict in (
        {"min_mean_cosine": round(mean + 0.01, 4), "min_cosine": -1.0},
        {"min_mean_cosine": -1.0, "min_cosine": round(worst + 0.01, 4)},
    ):
        with pytest.raises(vecguard.EmbeddingDriftError) as refused:
            vecguard.open(config("faiss", _shared(built), cased, guard=strict))
        assert f"mean >= {strict['min_mean_cosine']}, min >= {strict['min_cosine']}" in str(refused.value)


@pytest.mark.parametrize("chunking", [{"tokens": 32}, {"overlap": 4}])
def test_changed_chunking_is_refused(built, store: str, chunking: dict[str, int]) -> None:
    with pytest.raises(vecguard.CompatibilityError) as refused:
        vecguard.open(config(store, _shared(built, store), chunking=chunking))
    assert type(refused.value) is vecguard.CompatibilityError
    assert "chunking" in str(refused.value)
    # ...and the collection is untouched: the original settings still open it.
    with vecguard.open(config(store, _shared(built, store))) as engine:
        assert engine.guard_report.status == "ok"
        assert engine.count() == len(DOCS) + 1


def test_weights_replaced_with_the_same_size_and_mtime_are_refused(models, tmp_path: Path) -> None:
    folder = copy_model(models["pristine"], tmp_path / "model")
    cfg = config("faiss", tmp_path / "idx", str(folder))
    with vecguard.open(cfg) as engine:
        engine.add(corpus()[:3])
    weights = folder / "model.safetensors"
    old = weights.stat()
    replacement = models["perturbed"] / "model.safetensors"
    assert replacement.stat().st_size == old.st_size, "precondition: the other weights have the same size"
    shutil.copyfile(replacement, tmp_path / "incoming.safetensors")
    os.replace(tmp_path / "incoming.safetensors", weights)  # never writes through the hard link
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    try:
        engine = vecguard.open(cfg)
    except vecguard.EmbeddingDriftError as exc:
        assert "mean 0." in str(exc)
        return
    report = engine.guard_report
    engine.close()
    raise AssertionError(f"other weights were accepted as the same encoder: guard status {report.status!r}")


# ------------------------------------------------------------------ the CLI


def test_cli_check_and_reindex(built, models, env, tmp_path: Path, capsys) -> None:
    shutil.copytree(_shared(built), tmp_path / "idx")
    ok_toml, drift_toml = tmp_path / "ok.toml", tmp_path / "drift.toml"
    common = (
        f'[store]\nplugin = "faiss"\npath = "idx"\n\n'
        f"[chunking]\ntokens = {CHUNKING['tokens']}\noverlap = {CHUNKING['overlap']}\n"
    )
    ok_toml.write_text(f'[encoder]\nplugin = "sentence-transformers"\nmodel = "bundled"\n\n{common}', encoding="utf-8")
    drift_toml.write_text(
        f'[encoder]\nplugin = "sentence-transformers"\nmodel = {json.dumps(str(models["cased"]))}\n\n{common}',
        encoding="utf-8",
    )
    cli = vecguard_command()
    elsewhere = tmp_path.parent  # not the config's folder: relative paths resolve against the config

    # In process (same entry point, cheaper), then the real console script in a fresh process.
    from vecguard.cli import main

    capsys.readouterr()
    assert main(["check", "--config", str(ok_toml)]) == 0
    assert capsys.readouterr().out.startswith("OK")

    drifted = run([*cli, "check", "--config", str(drift_toml), "--json"], env, cwd=elsewhere)
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    report = json.loads(drifted.stdout)
    assert report["status"] == "refused" and report["error"] == "EmbeddingDriftError"
    assert 0.0 < report["mean_cosine"] < 0.99 and report["min_cosine"] <= report["mean_cosine"]

    assert main(["reindex", "--config", str(drift_toml), "--quiet"]) == 0
    assert f"reindexed {len(DOCS) + 1} documents" in capsys.readouterr().out
    assert not (tmp_path / "idx.reindexing").exists() and not (tmp_path / "idx.retired").exists()

    after = run([*cli, "check", "--config", str(drift_toml)], env, cwd=elsewhere)
    assert after.returncode == 0, after.stdout + after.stderr

    # The collection now lives in the new space: the old encoder is the one refused, and search works.
    assert main(["check", "--config", str(ok_toml)]) == 1
    with pytest.raises(vecguard.EmbeddingDriftError):
        vecguard.open(ok_toml)
    with vecguard.open(drift_toml) as engine:
        assert engine.guard_report.status == "ok"
        assert engine.count() == len(DOCS) + 1
        assert {d.id for d in engine.documents()} == {d["id"] for d in corpus()}
        assert engine.get(["lease"])[0].text == LONG_DOC
        for query, top in EXPECTED_TOP.items():
            assert engine.search(query, k=5)[0].id == top


# ------------------------------------------------------------------ cost of the guard

IDENTITY_TIMING = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import sentence_transformers, torch  # imports are not the guard's cost
    from vecguard import Registry
    from vecguard.guard import hash_files
    from vecguard.plugins.sentence_transformers import bundled_model_path, model_files
    files = model_files(bundled_model_path())
    registry = Registry.discover()
    t = time.perf_counter(); cold_digests = hash_files(files); cold_hash = time.perf_counter() - t
    t = time.perf_counter(); warm_digests = hash_files(files); warm_hash = time.perf_counter() - t
    cache = Path(sys.argv[1]) / "file-sha256.json"
    cache.unlink()
    t = time.perf_counter(); registry.build("encoder", "sentence-transformers", {"model": "bundled"}, Path.cwd())
    cold_build = time.perf_counter() - t
    t = time.perf_counter()
    encoder = registry.build("encoder", "sentence-transformers", {"model": "bundled"}, Path.cwd())
    warm_build = time.perf_counter() - t
    print(json.dumps({"cold_hash_ms": cold_hash * 1000, "warm_hash_ms": warm_hash * 1000,
                      "cold_encoder_ms": cold_build * 1000, "warm_encoder_ms": warm_build * 1000,
                      "same_digests": cold_digests == warm_digests, "files": len(files),
                      "cache_written": cache.exists(), "fingerprint": encoder.identity().fingerprint}))
    """
)


def test_guard_cost(fresh, env, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    done = run([sys.executable, "-c", IDENTITY_TIMING, str(empty)], {**env, "VECGUARD_CACHE_DIR": str(empty)})
    assert done.returncode == 0, done.stderr[-4000:]
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    assert timing["same_digests"] and timing["cache_written"], "the fingerprint cache should live in VECGUARD_CACHE_DIR"
    assert timing["files"] >= 8
    with capsys.disabled():
        print()
        for store in STORES:
            same, harmless = fresh[store]["same"]["report"], fresh[store]["harmless"]["report"]
            print(
                f"guard check at open [{store}], warm fingerprint cache: same fingerprint {same['elapsed_ms']:.2f} ms; "
                f"changed fingerprint (probe re-encoded) {harmless['elapsed_ms']:.1f} ms"
            )
        print(
            f"encoder identity, sha256 of {timing['files']} model files: cold cache {timing['cold_hash_ms']:.1f} ms, "
            f"warm {timing['warm_hash_ms']:.2f} ms"
        )
        print(
            "encoder build incl. identity (bundled model, imports "
            f"excluded): cold cache {timing['cold_encoder_ms']:.0f} ms, "
            f"warm {timing['warm_encoder_ms']:.0f} ms"
        )
    assert fresh["faiss"]["same"]["report"]["elapsed_ms"] > 0
