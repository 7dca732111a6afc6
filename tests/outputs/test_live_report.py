"""The live report: report.html is rewritten after every judged image and reloads itself while the run runs,
stopping once it is done; the terminal names it at the start. Checked from inside a run, and in headless
Chromium opened mid-run and again at the end."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from refineloop.backends.demo.sketch import SketchImageModel
from refineloop.backends.image.protocol import ImageRequest
from refineloop.cli.run_commands import start_run
from refineloop.outputs import report
from tests.conftest import judge_reply, wait_for
from tests.outputs.test_report import CHROMIUM_FLAGS, Page, find_chromium

REFRESH = re.compile(r'<meta http-equiv="refresh" content="(\d+)">')


class PeekingSketch(SketchImageModel):
    """The sketch painter, looking at report.html each time it is asked for an image."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(size=32)
        self.run_dir = run_dir
        self.seen: list[dict[str, Any]] = []

    def generate(self, request: ImageRequest) -> list[Any]:
        # An image takes a moment, as with a real model: the report's rewrite is then a small share of the run's
        # time, so it is rewritten after every image (a run of instant images is refreshed less often).
        time.sleep(0.2)
        report = self.run_dir / "report.html"
        html = report.read_text("utf-8") if report.exists() else ""
        self.seen.append(
            {
                "cards": len(re.findall(r'<article class="card', html)),
                "refresh": bool(REFRESH.search(html)),
                "collage": (self.run_dir / "collage.png").exists(),
            }
        )
        return super().generate(request)


def test_the_report_follows_the_run_and_stops_reloading_when_done(scripted, run_settings, quiet, tmp_path, monkeypatch):
    # The throttle's share is raised so that a slow write on a loaded machine cannot skip a rewrite here: this test
    # is about what the page shows; the throttle has its own test below.
    monkeypatch.setattr(report, "LIVE_SHARE", 0.9)
    cache, _ = scripted([judge_reply(3), judge_reply(5), judge_reply(4), judge_reply(6)])
    settings = run_settings(strategy="climbing", max_iterations=4)
    painter = PeekingSketch(Path(settings.output_dir))
    cache.register_image("sketch", painter)
    outcome = start_run(settings, models=cache, out=quiet)
    assert outcome.status == "done"
    # Before image N is drawn the page shows the N-1 judged images and reloads itself; no collage is made yet.
    assert [s["cards"] for s in painter.seen] == [0, 1, 2, 3]
    assert [s["refresh"] for s in painter.seen[1:]] == [True, True, True]
    assert not any(s["collage"] for s in painter.seen)
    html = (Path(outcome.run_dir) / "report.html").read_text("utf-8")
    assert not REFRESH.search(html) and html.count('<article class="card') == 4
    printed = quiet.getvalue().splitlines()
    where = next(i for i, line in enumerate(printed) if line.startswith("live report: "))
    assert printed[where] == f"live report: {outcome.run_dir}/report.html (updated as the run goes)"
    assert where < next(i for i, line in enumerate(printed) if line.startswith("[ 1/"))


@pytest.mark.slow
def test_chromium_sees_a_live_page_mid_run_and_a_still_one_at_the_end(start_cli, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH: install Debian's with `apt-get install chromium` (tests/run-all does)")
    # A goal without heat words keeps the demo critic from saying DONE: four images, each taking a second.
    proc = start_cli(
        "demo", "--goal", "a quiet blue teapot", "--strategy", "greedy", "--image-model", "sketch:size=96,delay=1.2",
        "--max-iterations", "4", "--seed", "3", "--output-dir", "r",
    )  # fmt: skip
    run = tmp_path / "r"
    report = run / "report.html"
    printed = []
    while not any(line.startswith("live report: ") for line in printed):
        printed.append(proc.stdout.readline())
        assert printed[-1], "the run ended before it named its report"
    assert f"live report: {report}" in printed[-1] and not any(line.startswith("[") for line in printed)

    def browse(name: str) -> Page:
        # A short virtual-time budget: the page is read before its own 5 s reload would fire.
        flags = [
            f if not f.startswith("--virtual-time-budget") else "--virtual-time-budget=1500" for f in CHROMIUM_FLAGS
        ]
        command = [chromium, *flags, f"--user-data-dir={tmp_path / name}", "--dump-dom", report.as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        page = Page()
        page.feed(result.stdout)
        page.dom = result.stdout  # type: ignore[attr-defined]
        return page

    wait_for(lambda: report.exists() and 'id="image-2"' in report.read_text("utf-8"), timeout=60)
    mid = browse("mid")
    assert proc.poll() is None, "the first look happens while the run is still going"
    assert REFRESH.search(mid.dom), "a running run's page reloads itself"
    assert "this page reloads every 5 s" in "".join(mid.text)
    shown = int(mid.body["data-images-loaded"] or 0)
    assert 2 <= shown == int(mid.body["data-images-total"] or 0), mid.body
    assert not (run / "collage.png").exists()

    assert proc.wait(timeout=120) == 0
    end = browse("end")
    assert not REFRESH.search(end.dom), "a finished run's page stays still"
    assert "done" in "".join(end.text) and "reloads" not in "".join(end.text)
    assert end.body["data-images-loaded"] == end.body["data-images-total"] == "5", end.body  # four, the best twice
    assert end.body["data-plot-points"] == "4"


def test_the_live_report_takes_at_most_its_share_of_the_run(tmp_path, monkeypatch):
    """A rewrite that cost c seconds is not repeated until c / LIVE_SHARE seconds have passed: a run of instant
    images gets a fresh page every few images instead of spending its time rewriting a growing page."""
    readings = iter([0.0, 0.1, 1.0, 2.0, 2.2, 2.25])  # a clock: start and end of each write, and each look
    monkeypatch.setattr(report, "time", SimpleNamespace(monotonic=lambda: next(readings)))  # this module's clock
    state = {"status": "running"}
    assert report.refresh_live_report(tmp_path, state)  # 0.0 -> 0.1: the first page, which cost 0.1 s
    (tmp_path / "report.html").unlink()
    assert not report.refresh_live_report(tmp_path, state)  # at 1.0: 0.9 s later, under 0.1 / 0.05 = 2 s
    assert not report.refresh_live_report(tmp_path, state)  # at 2.0: 1.9 s
    assert not (tmp_path / "report.html").exists()
    assert report.refresh_live_report(tmp_path, state)  # at 2.2: 2.1 s, past its share
    assert (tmp_path / "report.html").exists()
