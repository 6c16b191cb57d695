"""The wheel maps core/, backends/ and plugins/ onto one import root and nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT, run_python


def test_the_built_wheel_holds_only_vecguard_and_imports_from_itself(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("vecguard-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        archive.extractall(tmp_path / "site")
    top_levels = {name.split("/")[0] for name in names}
    assert {t for t in top_levels if not t.endswith(".dist-info")} == {"vecguard"}
    assert {
        "vecguard/backends/faiss/__init__.py",
        "vecguard/backends/base.py",
        "vecguard/plugins/bm25/__init__.py",
        "vecguard/plugins/bm25/segment.py",
        "vecguard/engine.py",
        "vecguard/server/app.py",
        "vecguard/py.typed",
    } <= set(names)
    for line in (
        "faiss = vecguard.backends.faiss",
        "bm25 = vecguard.plugins.bm25",
        "rrf = vecguard.plugins.rrf",
        "dbsf = vecguard.plugins.dbsf",
        "memory = vecguard.backends.memory",
        "sentence-transformers = vecguard.plugins.sentence_transformers",
    ):
        assert line in entry_points

    site = tmp_path / "site"
    code = (
        "import sys, vecguard, vecguard.backends.faiss, vecguard.plugins.bm25\n"
        "print(vecguard.__file__)\n"
        "print(sorted(f'{k}:{n}' for k, n in vecguard.Registry.discover().parts))\n"
    )
    # -I would drop PYTHONPATH; -S is not wanted (dependencies live in site-packages), so put the wheel first.
    result = run_python(code, env={"PYTHONPATH": str(site)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module_file, parts = result.stdout.strip().splitlines()
    assert Path(module_file).is_relative_to(site)
    assert "store:faiss" in parts and "encoder:sentence-transformers" in parts
