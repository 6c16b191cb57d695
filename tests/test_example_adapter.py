"""A contributor's adapter, installed as a real package, registered by entry point, passes the same suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vecguard import Registry
from vecguard.testing import VectorStoreConformance

EXAMPLE = Path(__file__).parent / "example_adapter"


@pytest.fixture(scope="module", autouse=True)
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install the example package into a folder on sys.path and PYTHONPATH (fresh processes see it too)."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    old_path = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), old_path) if p)
    yield target
    sys.path.remove(str(target))
    if old_path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_path


def test_the_example_store_is_discovered_from_its_distribution() -> None:
    found = Registry.discover().parts[("store", "example")]
    assert found.distribution == "vecguard-example-store"


class TestExampleStore(VectorStoreConformance):
    plugin = "example"

    @pytest.fixture
    def store_options(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "points.json")}
