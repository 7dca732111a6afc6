"""bench/search.py in its quick mode: proof that the simulated world runs through the real graph."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "search.py"
    spec = importlib.util.spec_from_file_location("bench_search", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_search"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_quick_search_bench_prints_every_configuration(bench, capsys):
    assert bench.main(["--quick", "--iterations", "4"]) == 0
    out = capsys.readouterr().out
    for label, _ in bench.CONFIGS:
        assert label in out
    assert "against climbing (the seed's)" in out


def test_simulated_world_encodes_quality_losslessly(bench):
    buffer = io.BytesIO()
    bench.encode(7.3456).save(buffer, format="PNG")
    assert bench.decode(buffer.getvalue()) == pytest.approx(7.3456, abs=1e-4)
