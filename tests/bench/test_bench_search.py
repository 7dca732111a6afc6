"""bench/search.py in its quick mode: proof that the simulated world runs through the real graph."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "search.py"
    spec = importlib.util.spec_from_file_location("bench_search", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_search"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_quick_search_bench_prints_every_configuration_in_both_worlds(bench, capsys):
    # One seeded run per row proves each configuration goes through the graph in both worlds; --quick's three
    # runs a row took 107 s of a CI worker's time here.
    assert bench.main(["--runs", "1", "--iterations", "4", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "world 'today'" in out and "world 'harsh'" in out
    for label, _ in bench.CONFIGS:
        assert out.count(label) == 4, label  # a row and a verdict line in each world
    assert out.count("against climbing (the seed's)") == 2
    for column in ("quality", "truly best", "gap", "DONE", "<8", "ideal"):
        assert column in out


def test_the_harsh_world_is_the_one_the_readme_writes_down(bench):
    harsh = bench.WORLDS["harsh"]
    assert (harsh.score_low, harsh.score_high, harsh.appeal, harsh.lean, harsh.abstain) == (6.0, 8.0, 0.8, 1.0, 0.6)
    assert (harsh.knee, harsh.decay, harsh.done_at, harsh.duel_bias) == (7.5, 0.6, 8.5, 0.5)
    assert bench.WORLDS["today"] == bench.Noise()


def test_simulated_images_survive_the_critics_jpeg(bench):
    from refineloop.backends.chat.critic_images import encode

    image = bench.encode(7.3456, -1.25)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert bench.decode_both(buffer.getvalue()) == pytest.approx((7.346, -1.25), abs=1e-3)
    assert bench.decode_both(encode(image)) == pytest.approx((7.346, -1.25), abs=1e-3)


def test_an_ideal_pick_sees_what_duels_see(bench, tmp_path):
    from refineloop.settings import RunSettings

    settings = RunSettings(image_model="sim", eval_model="sim", goal="a simulated goal", max_iterations=4)
    result = bench.run_once(settings, 3, bench.Noise(), tmp_path / "today")
    assert result.images == 4 and result.ideal, "in today's world duels see true quality: the ideal pick is right"
    blind = bench.Noise(appeal=50.0)  # an appeal that swamps quality: what duels see is mostly not quality
    results = [bench.run_once(settings, seed, blind, tmp_path / f"blind-{seed}") for seed in range(4)]
    assert not all(r.ideal for r in results)


def test_the_defaults_row_is_the_settings_defaults(bench):
    from refineloop.settings import RunSettings

    assert dict(bench.CONFIGS)["defaults: climbing, patience 10"] == {}
    defaults = RunSettings()
    assert (defaults.strategy, defaults.effective_patience(), defaults.final_pick, defaults.confirm_done) == (
        "climbing",
        10,
        4,
        True,
    )


def test_a_simulated_draft_is_its_full_image_plus_noise_and_costs_a_fraction(bench, tmp_path):
    from refineloop.backends.image.protocol import ImageRequest

    world = bench.World(5, bench.Noise(draft=0.5))
    model = bench.SimImageModel(world)
    full = ImageRequest(prompt="idea-start", negative_prompt="", seeds=(1, 2, 3), steps=bench.FULL_STEPS)
    draft = ImageRequest(prompt="idea-start", negative_prompt="", seeds=(1, 2, 3), steps=bench.FULL_STEPS // 4)
    images, drafts = [[bench.decode_both(_png(i))[0] for i in model.generate(r)] for r in (full, draft)]
    assert images == [bench.decode_both(_png(i))[0] for i in model.generate(full)], "a full image is its seed's"
    gaps = [d - i for d, i in zip(drafts, images, strict=True)]
    assert all(gap != 0 for gap in gaps) and all(abs(gap) < 3 for gap in gaps)
    # What a draft stands for is its full image: the bench scores that, and new ideas are proposed from it.
    assert [bench.decode(_png(i)) for i in model.generate(draft)] == images
    knobs = dict(bench.CONFIGS)["drafts, 4 rounds"]
    settings = bench.RunSettings(
        image_model="sim",
        eval_model="sim",
        goal="a simulated goal",
        max_iterations=4,
        **{k: v for k, v in knobs.items() if k != "rounds"},
    )
    result = bench.run_once(settings, 3, bench.Noise(), tmp_path / "run", draft_cost=0.25)
    made = len(list((tmp_path / "run").glob("[0-9]*.png")))
    sketched = len(list((tmp_path / "run" / "drafts").glob("*.png")))
    assert sketched >= 3 and result.images == made + 0.25 * sketched


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_walks_drafts_cost_a_fraction_and_its_best_is_drawn_in_full(bench, tmp_path):
    knobs = {k: v for k, v in dict(bench.CONFIGS)["walk, pick 2, 6 rounds"].items() if k != "rounds"}
    settings = bench.RunSettings(
        image_model="sim", eval_model="sim", goal="a simulated goal", max_iterations=6, **knobs
    )
    result = bench.run_once(settings, 3, bench.Noise(), tmp_path / "run", draft_cost=0.25)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "run").glob("[0-9]*.json"))]
    walked = [r for r in records if r.get("walk_draft")]
    full = [r for r in records if not r.get("walk_draft")]
    assert len(walked) == 6 and len(full) == 1 and full[0]["draft"]["iteration"] in {r["iteration"] for r in walked}
    assert result.images == 1 + 0.25 * 6
    assert result.quality == bench.decode(tmp_path / "run" / "best.png")
