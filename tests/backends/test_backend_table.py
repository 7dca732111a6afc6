"""The backend table: a backend registered through it is checked, loaded and listed like a built-in, through the
CLI a user types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from refineloop.backends.builtin import BACKENDS, BUILT_INS
from refineloop.backends.demo.sketch import SketchImageModel
from refineloop.backends.table import Backend, BackendTable, prefixed
from refineloop.cli.main import main
from refineloop.errors import SettingsError


class Tiles(SketchImageModel):
    """A plugin's image model: the sketch painter at a size given in the spec."""


def _check_tiles(spec: str) -> None:
    if not spec.removeprefix("tiles:").isdigit():
        raise SettingsError("needs a size in pixels after tiles: (e.g. tiles:64)")


def _load_tiles(spec: str, settings: Any) -> Tiles:
    model = Tiles(size=int(spec.removeprefix("tiles:")))
    model.name = spec
    return model


TILES = Backend(
    name="tiles",
    kind="image",
    syntax="tiles:<size>",
    summary="a test plugin painting sketches at a given size",
    claims=prefixed("tiles"),
    check=_check_tiles,
    load=_load_tiles,
)


@pytest.fixture
def tiles_plugin() -> Iterator[Backend]:
    """TILES registered in the process's table for one test, as a plugin would register it."""
    saved = list(BACKENDS.entries)
    BACKENDS.register(TILES)
    try:
        yield TILES
    finally:
        BACKENDS.entries[:] = saved


def test_a_registered_backend_runs_through_the_cli(tiles_plugin, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--image-model", "tiles:48", "--max-iterations", "2", "--seed", "1", "--output-dir", str(out)])
    assert code == 0
    from PIL import Image

    with Image.open(out / "01.png") as image:
        assert image.size == (48, 48)
    assert "tiles:48" in capsys.readouterr().out


def test_a_registered_backends_own_check_refuses_in_one_line(tiles_plugin, tmp_path, capsys):
    code = main(["run", "--image-model", "tiles:big", "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not (tmp_path / "run").exists()
    assert err == "refineloop: error: --image-model 'tiles:big' needs a size in pixels after tiles: (e.g. tiles:64)"


def test_help_lists_every_backend_from_the_table(tiles_plugin, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, at hyphens too
    for entry in (*BUILT_INS, TILES):
        assert "".join(f"{entry.syntax}: {entry.summary}".split()) in text


def test_an_unknown_chat_prefix_names_every_chat_backend(tmp_path, capsys):
    assert main(["run", "--eval-model", "llamafile:x", "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--eval-model 'llamafile:x' is not a model: use demo[:delay=S], ollama:<model> or openai:<model>" in err


def test_a_backends_options_warn_when_no_model_uses_it(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["demo", "--max-iterations", "1", "--ollama-url", "http://127.0.0.1:9", "--output-dir", str(out)])
    assert code == 0
    assert "warning: --ollama-url only serves ollama:<model> models, and none is used here" in capsys.readouterr().out


def test_a_caches_registered_model_shadows_nothing_in_the_process_table():
    child = BackendTable(parent=BACKENDS)
    painter = SketchImageModel(size=32)
    from refineloop.backends.table import registered

    child.register(registered("painter", "image", painter))
    assert child.find("image", "painter") is not None and BACKENDS.find("image", "painter") is None
    assert child.find("image", "sketch") is BACKENDS.find("image", "sketch")
