"""The newcomer's path: README's two commands, and CI running the very same test entry point."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

ENTRY = "tests/run-all"


def _readme_commands(readme: str) -> list[str]:
    """The bash blocks of the README's "Two commands" section, in order."""
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def _commands(script: str) -> list[str]:
    """The lines of a shell script that run something (no comments, blank lines or shell options)."""
    lines = (line.strip() for line in script.splitlines())
    return [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of the repository: what a newcomer (and CI) starts from; only committed files count."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.fail("the entry-point test needs the project's git repository and git")
    target = tmp_path_factory.mktemp("fresh") / "refineloop"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True, capture_output=True)
    return target


def test_readme_and_ci_run_the_same_test_entry_point(clone: Path) -> None:
    setup, tests = _readme_commands((clone / "README.md").read_text("utf-8"))
    assert "refineloop demo" in setup and "torch==2.13.0" in setup
    assert tests == f"bash {ENTRY}", "README's second command must be the entry point itself"
    assert _commands((clone / ".ci/run").read_text("utf-8")) == [f"exec bash {ENTRY}"]
    assert (clone / ENTRY).is_file()


def test_the_entry_point_installs_every_tier_the_tests_use(clone: Path) -> None:
    script = (clone / ENTRY).read_text("utf-8")
    run = _commands(script)
    # torch pinned before anything that could ask for a newer one; the extras the scale tier imports.
    installs = [line for line in run if "pip install" in line]
    assert "torch==2.13.0" in installs[0] and '-e ".[test,ray]"' in installs[1]
    assert "chromium" in script and "postgresql" in script
    assert run[-1].startswith("REFINELOOP_NO_SKIPS=1 python -m pytest")
    extras = tomllib.loads((clone / "pyproject.toml").read_text("utf-8"))["project"]["optional-dependencies"]
    assert "refineloop[postgres]" in extras["ray"]


def test_a_skip_under_the_entry_point_is_a_failure(tmp_path: Path) -> None:
    (tmp_path / "test_one.py").write_text("import pytest\n\ndef test_skips():\n    pytest.skip('no chromium')\n")
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    env = {**os.environ, "REFINELOOP_NO_SKIPS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout
    assert "no chromium" in result.stdout
