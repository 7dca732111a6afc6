"""report.html: built from a real demo run, parsed with the stdlib, and rendered in headless Chromium."""

from __future__ import annotations

import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from refineloop.cli.run_commands import start_run
from refineloop.outputs.artifacts import write_artifacts
from refineloop.outputs.report import write_report
from refineloop.run_folder.image_files import listed_images, read_sidecars, save_json
from refineloop.settings import RunSettings


class Page(HTMLParser):
    """What a reader of the page gets: image sources, visible text, plot points, body attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.text: list[str] = []
        self.points: list[dict[str, str | None]] = []
        self.body: dict[str, str | None] = {}
        self.scripts = 0
        self.external: list[str] = []
        self._svg_depth = 0
        self._in_plot = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag == "body":
            self.body = a
        if tag == "script":
            self.scripts += 1
            if a.get("src"):
                self.external.append(a["src"] or "")
        if tag == "link" and a.get("href"):
            self.external.append(a["href"] or "")
        if tag == "svg" and a.get("id") == "score-plot":
            self._in_plot = True
        if self._in_plot:
            self._svg_depth += 1
            if "data-iteration" in a:
                self.points.append(a)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in_plot:
            self._svg_depth -= 1
            if self._svg_depth == 0:
                self._in_plot = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text("utf-8"))
    page.close()
    return page


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("report") / "r"
    settings = RunSettings(
        image_model="sketch", eval_model="demo", seed=3, max_iterations=6, output_dir=str(run_dir), strategy="climbing"
    )
    outcome = start_run(settings, out=io.StringIO())
    assert outcome.status == "done"
    return run_dir, outcome.values


def test_report_lists_every_image_critique_and_plot_point(demo_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, values = demo_run
    report = run_dir / "report.html"
    assert report.exists()
    page = parse(report)
    images = [path.name for _, path in listed_images(str(run_dir))]
    assert len(images) >= 2
    text = "".join(page.text)
    # Every image in iteration order (the best one also leads the page), each with its record.
    best = values["best"]["iteration"]
    assert page.imgs[0] == f"{best:02d}.png"
    assert page.imgs[1:] == images
    for iteration, record in read_sidecars(str(run_dir)).items():
        assert record["critique"] in text, iteration
        assert record["prompt"] in text, iteration
        assert f"seed {record['seed']}" in text
    assert "climbing" in text
    assert values["stop_reason"] in text
    assert values["task"]["goal"] in text
    # One plot point per image, in order, with the score from its sidecar.
    assert [int(p["data-iteration"] or 0) for p in page.points] == list(range(1, len(images) + 1))
    scores = {i: r["score"] for i, r in read_sidecars(str(run_dir)).items()}
    assert [p["data-score"] for p in page.points] == [str(scores[i]) for i in range(1, len(images) + 1)]
    # Self-contained: no external scripts or stylesheets, nothing fetched over the network.
    assert page.external == []
    assert "http://" not in report.read_text("utf-8").replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in report.read_text("utf-8")


def test_report_escapes_text_and_shows_unknown_scores_as_gaps(tmp_path: Path) -> None:
    for iteration, score in ((1, 3), (2, None), (3, 5)):
        Image.new("RGB", (16, 16), (200, 40 * iteration, 0)).save(tmp_path / f"{iteration:02d}.png")
        save_json(
            {
                "iteration": iteration,
                "prompt": f"<b>prompt {iteration}</b> & co",
                "seed": iteration,
                "strength": 0.5,
                "score": score,
                "verdict": "unknown" if score is None else "CONTINUE",
                "critique": f'<script>alert("{iteration}")</script>',
                "decision": "rejected" if score is None else "accepted",
                "best_iteration": 1 if iteration < 3 else 3,
                "best_score": 3 if iteration < 3 else 5,
            },
            tmp_path / f"{iteration:02d}.json",
        )
    state = {
        "run_dir": str(tmp_path),
        "settings": {"strategy": "img2img"},
        "task": {"goal": "a <goal> & more"},
        "status": "running",
        "best": {"iteration": 3, "score": 5},
    }
    html = write_report(tmp_path, state).read_text("utf-8")
    assert "<script>alert" not in html and "&lt;script&gt;alert(&quot;1&quot;)" in html
    assert "&lt;b&gt;prompt 1&lt;/b&gt; &amp; co" in html
    assert "a &lt;goal&gt; &amp; more" in html
    page = parse(tmp_path / "report.html")
    assert page.scripts == 1  # only the page's own load counter
    assert [p["data-score"] for p in page.points] == ["3", "unknown", "5"]
    # The unknown score splits the score line: two one-point runs, so no score polyline at all.
    assert 'class="score-line"' not in html
    assert "img2img strength 0.50" in "".join(page.text)
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_artifacts_writes_the_report(demo_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, values = demo_run
    (run_dir / "report.html").unlink()
    assert run_dir / "report.html" in write_artifacts(values)
    assert (run_dir / "report.html").exists()


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


@pytest.mark.slow
def test_report_renders_every_image_and_the_plot_in_chromium(
    demo_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH: install Debian's with `apt-get install chromium` (.ci/run does)")
    run_dir, _ = demo_run
    url = (run_dir / "report.html").resolve().as_uri()
    images = len(listed_images(str(run_dir)))

    def browse(*extra: str) -> subprocess.CompletedProcess[str]:
        profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    dom = browse("--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = Page()
    rendered.feed(dom.stdout)
    body = rendered.body
    # The page's load handler counted what the browser decoded and laid out: every image (the best one twice,
    # once at the top) and one plot point per image in an SVG that takes up room on the page.
    assert body.get("data-images-total") == str(images + 1), body
    assert body.get("data-images-loaded") == str(images + 1), body
    assert body.get("data-plot-points") == str(images), body
    assert int(body.get("data-plot-width") or 0) > 300, body

    shot = tmp_path / "shot.png"
    result = browse(f"--screenshot={shot}", "--window-size=1200,3000")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1200, 3000)
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        # A blank page has one or two colours; the sketches alone bring thousands.
        assert len(colours) > 500
        # The hotdog images are warm: plenty of strongly red pixels prove they were painted, not just laid out.
        reds = sum(count for count, (r, g, b) in colours if r > 150 and r > g + 60 and r > b + 60)
        assert reds > 10_000
