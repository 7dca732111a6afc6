"""What users of other image tools expect, through the CLI: `--scheduler` and `--negative-prompt`, PNG metadata
that sd-parsers and sd-prompt-reader read back for every kind of image, and `show`'s remake command."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from refineloop.cli.main import main
from refineloop.files.trace import read_trace
from refineloop.run_folder.provenance import read_provenance
from refineloop.version import __version__

pytestmark = pytest.mark.slow

NEGATIVE = "blurry, two hotdogs"


def readers(path: Path) -> dict[str, Any]:
    """What sd-parsers and sd-prompt-reader read back from an image, side by side."""
    from sd_parsers import ParserManager
    from sd_prompt_reader.image_data_reader import ImageDataReader

    parsed = ParserManager().parse(str(path))
    assert parsed is not None, f"sd-parsers found nothing in {path}"
    (sampler,) = parsed.samplers
    reader = ImageDataReader(str(path))
    return {"parsers": parsed, "sampler": sampler, "reader": reader}


def weights_listing_hash(folder: Path) -> str:
    """The documented model hash of a diffusers folder, computed here independently."""
    files = sorted(
        (p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    listing = "".join(
        f"{p.relative_to(folder).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in files
    )
    return hashlib.sha256(listing.encode()).hexdigest()[:10]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path, tiny_lora: Path) -> Path:
    """Two images of the tiny SD pipeline with a LoRA, a sampler and a negative prompt: text-to-image, then
    image-to-image."""
    root = tmp_path_factory.mktemp("meta")
    args = ["run", "--image-model", str(tiny_sd_dir), "--eval-model", "demo", "--strategy", "img2img", "--steps", "3"]
    args += [
        "--lora",
        f"{tiny_lora}:0.7",
        "--scheduler",
        "dpm++_2m_karras",
        "--negative-prompt",
        NEGATIVE,
        "--head-start",
    ]
    assert main([*args, "--max-iterations", "2", "--seed", "6", "--output-dir", str(root / "run")]) == 0
    return root / "run"


def test_every_image_kind_reads_back_in_sd_parsers_and_sd_prompt_reader(
    lora_run: Path, tiny_sd_dir: Path, tiny_lora: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--max-iterations", "1", "--negative-prompt", "", "--output-dir", "sketch"]) == 0
    assert (
        main(["run", "--image-model", str(tiny_sd_dir), "--steps", "2", "--max-iterations", "1", "--output-dir", "own"])
        == 0
    )
    capsys.readouterr()
    data = tiny_lora.read_bytes()
    lora_hash = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]
    model_hash = weights_listing_hash(tiny_sd_dir)
    kinds = {
        "sketch": (tmp_path / "sketch" / "01.png", "sketch", "", None, None),
        "diffusers, its own sampler": (tmp_path / "own" / "01.png", "DDIM", "Automatic", model_hash, None),
        "LoRA, text-to-image": (lora_run / "01.png", "DPM++ 2M", "Karras", model_hash, lora_hash),
        "LoRA, image-to-image": (lora_run / "02.png", "DPM++ 2M", "Karras", model_hash, lora_hash),
    }
    for kind, (path, sampler_word, schedule, m_hash, l_hash) in kinds.items():
        record = read_provenance(path)
        got = readers(path)
        sampler, reader = got["sampler"], got["reader"]
        # sd-parsers: the A1111 parser finds the sampler line.
        assert sampler.name == sampler_word, kind
        assert sampler.prompts[0].value == record["prompt"], kind
        assert [p.value for p in sampler.negative_prompts] == (
            [record["negative_prompt"]] if record["negative_prompt"] else []
        )
        assert sampler.parameters["seed"] == str(record["seed"]) and sampler.parameters["steps"] == str(record["steps"])
        assert sampler.parameters.get("scheduler") == (schedule or None), kind
        assert sampler.model.name == record["model"] and sampler.model.hash == m_hash, kind
        meta = got["parsers"].metadata
        assert (
            meta["Size"] == f"{record['width']}x{record['height']}" and meta["Version"] == f"refineloop {__version__}"
        )
        # sd-prompt-reader: prompt and negative prompt apart, and the settings it shows.
        assert reader.tool == "A1111 webUI" and reader.positive == record["prompt"], kind
        assert reader.negative == record["negative_prompt"], kind
        shown = reader.parameter
        assert (shown["sampler"], shown["seed"], shown["steps"], shown["model"]) == (
            sampler_word,
            str(record["seed"]),
            str(record["steps"]),
            record["model"],
        ), kind
        assert shown["size"] == f"{record['width']}x{record['height']}", kind
        assert f"Version: refineloop {__version__}" in reader.setting
        if record["guidance"] is not None:
            assert shown["cfg"] == f"{record['guidance']:g}" and sampler.parameters["cfg_scale"] == shown["cfg"]
        # No path anywhere in the text other tools read: models and LoRAs go by their base names.
        text = Image.open(path).text["parameters"]
        assert str(tiny_sd_dir) not in text and str(tiny_lora.parent) not in text and str(tmp_path) not in text
        if l_hash:
            assert f'Lora hashes: "tiny: {l_hash}"' in reader.setting, kind
            assert meta["Hashes"] == {"model": m_hash, "lora:tiny": l_hash}, kind
            assert record["loras"] == [{"source": "tiny", "scale": 0.7, "hash": l_hash}]
    assert read_provenance(lora_run / "02.png")["strength"] == 0.8
    assert "Denoising strength: 0.8" in readers(lora_run / "02.png")["reader"].setting


def test_show_prints_the_command_that_remakes_the_image(
    lora_run: Path, tiny_sd_dir: Path, tiny_lora: Path, tmp_path: Path, capsys
) -> None:
    image = lora_run / "01.png"
    assert main(["show", str(image)]) == 0
    out = capsys.readouterr().out
    assert "sampler: DPM++ 2M, Karras (--scheduler dpm++_2m_karras)" in " ".join(out.split())
    line = next(row for row in out.splitlines() if row.startswith("remake it:"))
    words = shlex.split(line.removeprefix("remake it:"))
    assert words == [
        "refineloop", "run", "--from", str(image), "--image-model", str(tiny_sd_dir),
        "--lora", f"{tiny_lora}:0.7", "--scheduler", "dpm++_2m_karras", "--negative-prompt", NEGATIVE,
    ]  # fmt: skip
    # Following it (one round) draws the very same picture.
    assert (
        main([*words[1:], "--max-iterations", "1", "--eval-model", "demo", "--output-dir", str(tmp_path / "again")])
        == 0
    )
    with Image.open(image) as a, Image.open(tmp_path / "again" / "01.png") as b:
        assert a.tobytes() == b.tobytes()
    # A copy outside its run folder names the model and LoRA by base name, since that is all it carries.
    copy = tmp_path / "shared.png"
    copy.write_bytes(image.read_bytes())
    assert main(["show", str(copy)]) == 0
    assert "--image-model pipe --lora tiny:0.7 --scheduler dpm++_2m_karras" in capsys.readouterr().out


def test_show_says_which_fields_of_another_tools_image_it_cannot_use(tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "webui.png"
    info = PngInfo()
    info.add_text(
        "parameters",
        "a lighthouse at dusk\nNegative prompt: blurry\nSteps: 28, Sampler: DPM++ 2M Karras, CFG scale: 5, Seed: 9, "
        "Size: 64x64, Model hash: abcdef0123, Model: v1-5-pruned, Clip skip: 2, Hires upscale: 2, Sampler Z: q",
    )
    Image.new("RGB", (64, 64)).save(foreign, pnginfo=info)
    assert main(["show", str(foreign)]) == 0
    out = capsys.readouterr().out
    unused = next(row for row in out.splitlines() if row.startswith("cannot use:"))
    assert "Model (v1-5-pruned: named by its file only, pass --image-model)" in unused
    assert "Clip skip" in unused and "Hires upscale" in unused and "Sampler Z" in unused
    assert "DPM++ 2M" not in unused, "a sampler in the table is used"
    assert "--scheduler dpm++_2m_karras" in out and "--negative-prompt blurry" in out


def test_schedulers_are_listed_checked_and_refused_in_one_line(
    tiny_sd_dir: Path, tiny_sd3_dir: Path, tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "euler, euler_karras, euler_a" in help_text and "dpm++_2m_karras" in help_text and "unipc" in help_text
    cases = [
        (
            ["--scheduler", "euler_b", "--image-model", str(tiny_sd_dir)],
            "unknown scheduler 'euler_b': use one of euler,",
        ),
        (["--scheduler", "euler"], "sketch draws without a sampler: drop --scheduler"),
        (["--scheduler", "euler", "--image-model", str(tiny_sd3_dir)], "it is a flow-matching model"),
    ]
    for flags, words in cases:
        assert main(["run", *flags, "--max-iterations", "1", "--output-dir", str(tmp_path / "r")]) in (1, 2)
        captured = capsys.readouterr()
        err = captured.err + captured.out
        assert words in err and "Traceback" not in err, err
        assert not (tmp_path / "r").exists()


def test_a_scheduler_changes_the_picture_and_the_flag_negative_prompt_wins(
    tiny_sd_dir: Path, tmp_path: Path, capsys
) -> None:
    base = ["run", "--image-model", str(tiny_sd_dir), "--steps", "3", "--seed", "2", "--max-iterations", "1"]
    for name, flags in (("own", []), ("euler_a", ["--scheduler", "euler_a"]), ("clear", ["--negative-prompt", ""])):
        assert main([*base, *flags, "--output-dir", str(tmp_path / name)]) == 0
    capsys.readouterr()
    own, euler = read_provenance(tmp_path / "own" / "01.png"), read_provenance(tmp_path / "euler_a" / "01.png")
    assert own["negative_prompt"].startswith("multiple, two"), "the task's key when no flag is given"
    assert read_provenance(tmp_path / "clear" / "01.png")["negative_prompt"] == "", "an empty flag clears it"
    assert (euler["scheduler"], euler["sampler"], euler["schedule_type"]) == ("euler_a", "Euler a", "Automatic")
    with Image.open(tmp_path / "own" / "01.png") as a, Image.open(tmp_path / "euler_a" / "01.png") as b:
        assert a.tobytes() != b.tobytes()


def test_library_warnings_stay_off_the_console_and_in_the_trace(lora_run: Path) -> None:
    # The tiny LoRA has no text-encoder keys: diffusers warns about it (with an issues link) on every load.
    kept = [r for r in read_trace(str(lora_run)) if r.get("kind") == "library-log"]
    assert any("No LoRA keys associated to CLIPTextModel" in r["message"] for r in kept)
    # Loaded for the first image drawn ahead, before LangGraph: the folder was already there to keep it.
    assert [r.get("head_start") for r in read_trace(str(lora_run)) if r.get("kind") == "image"][0] == "used"
