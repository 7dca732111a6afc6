"""Where refineloop puts each value in a user's ComfyUI workflow, and the workflows it refuses (in one line,
through the CLI, before any folder exists)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from refineloop.backends.image.comfyui.workflow import (
    ADDED_ENCODE,
    ADDED_LOAD,
    Values,
    WorkflowError,
    fill,
    parse,
    place,
)
from refineloop.cli.main import main
from tests.fake_comfyui import api_workflow


def custom_sampler_workflow() -> dict[str, Any]:
    """A SamplerCustomAdvanced graph: seed on RandomNoise, cfg on CFGGuider, steps and denoise on BasicScheduler,
    the prompt text coming from a string primitive, an SDXL encoder for the negative."""
    return {
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "11": {"class_type": "CFGGuider", "inputs": {"cfg": 5.5, "positive": ["13", 0], "negative": ["14", 0]}},
        "12": {"class_type": "BasicScheduler", "inputs": {"steps": 12, "denoise": 1.0, "scheduler": "simple"}},
        "13": {"class_type": "CLIPTextEncode", "inputs": {"text": ["15", 0], "clip": ["4", 1]}},
        "14": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "blurry", "text_l": "blurry"}},
        "15": {"class_type": "PrimitiveString", "inputs": {"value": "a cat"}},
        "16": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 4}},
        "17": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {"noise": ["10", 0], "guider": ["11", 0], "sigmas": ["12", 0], "latent_image": ["16", 0]},
        },
        "18": {"class_type": "VAEDecode", "inputs": {"samples": ["17", 0], "vae": ["4", 2]}},
        "19": {"class_type": "SaveImage", "inputs": {"images": ["18", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
    }


def test_the_default_workflow_is_filled_by_following_the_samplers_links():
    workflow = api_workflow()
    places = place(workflow)
    values = Values(prompt="a hotdog", negative="blur", seed=42, steps=9, guidance=3.5, width=512, height=768)
    out, filled = fill(workflow, places, values)
    assert out["6"]["inputs"]["text"] == "a hotdog" and out["7"]["inputs"]["text"] == "blur"
    assert out["3"]["inputs"] | {"seed": 42, "steps": 9, "cfg": 3.5} == out["3"]["inputs"]
    assert (out["5"]["inputs"]["width"], out["5"]["inputs"]["height"]) == (512, 768)
    assert filled == {
        "6.text": "a hotdog",
        "7.text": "blur",
        "3.seed": 42,
        "3.steps": 9,
        "3.cfg": 3.5,
        "5.width": 512,
        "5.height": 768,
        "5.batch_size": 1,
    }
    assert workflow["6"]["inputs"]["text"] == "a bottle"  # the user's workflow itself is left alone


def test_image_to_image_adds_a_load_and_an_encoder_fed_by_the_decoders_vae():
    workflow = api_workflow()
    out, filled = fill(workflow, place(workflow), Values("p", "n", 1, image="up.png", denoise=0.4))
    assert out[ADDED_LOAD] == {"class_type": "LoadImage", "inputs": {"image": "up.png"}}
    assert out[ADDED_ENCODE]["inputs"] == {"pixels": [ADDED_LOAD, 0], "vae": ["4", 2]}
    assert out["3"]["inputs"]["latent_image"] == [ADDED_ENCODE, 0] and out["3"]["inputs"]["denoise"] == 0.4
    assert filled["3.denoise"] == 0.4


def test_a_custom_sampler_graph_is_followed_through_noise_guider_sigmas_and_a_string_primitive():
    workflow = custom_sampler_workflow()
    out, filled = fill(workflow, place(workflow), Values("a dog", "ugly", 3, steps=4, guidance=2.0, width=64))
    assert out["15"]["inputs"]["value"] == "a dog"
    assert out["14"]["inputs"]["text_g"] == out["14"]["inputs"]["text_l"] == "ugly"
    assert out["10"]["inputs"]["noise_seed"] == 3 and out["12"]["inputs"]["steps"] == 4
    assert out["11"]["inputs"]["cfg"] == 2.0 and out["16"]["inputs"]["batch_size"] == 1
    assert set(filled) == {
        *("15.value", "14.text_g", "14.text_l", "10.noise_seed", "12.steps", "11.cfg", "16.width", "16.batch_size")
    }


def test_titled_nodes_settle_what_links_cannot():
    workflow = api_workflow()
    workflow["20"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "style words", "clip": ["4", 1]}}
    workflow["21"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["20", 0]},
    }
    workflow["3"]["inputs"]["positive"] = ["21", 0]
    with pytest.raises(
        WorkflowError, match=r"positive input comes from several text nodes \(20, 6\).*'refineloop prompt'"
    ):
        place(workflow)
    workflow["6"]["_meta"] = {"title": "Refineloop Prompt"}
    assert place(workflow).prompt.node == "6"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.update({"30": json.loads(json.dumps(w["3"]))}), r"several samplers \(nodes 3, 30\)"),
        (
            lambda w: w.update({"31": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}}),
            r"several image outputs \(nodes 9, 31\)",
        ),
        (lambda w: w["3"]["inputs"].update({"negative": ["6", 0]}), r"node 6 feeds both the positive and the negative"),
        (lambda w: w.pop("9"), r"no SaveImage or PreviewImage node"),
        (lambda w: w["3"]["inputs"].pop("seed"), r"found no seed for sampler 3"),
    ],
)
def test_a_value_without_one_place_is_refused_naming_the_nodes(change, message):
    workflow = api_workflow()
    change(workflow)
    with pytest.raises(WorkflowError, match=message):
        place(workflow)


def test_a_ui_format_workflow_is_told_to_export_in_api_format():
    with pytest.raises(WorkflowError, match=r"UI workflow: export it in API format"):
        parse(json.dumps({"nodes": [], "links": [], "version": 0.4}), "w.json")


def test_the_cli_refuses_an_unfillable_workflow_in_one_line_before_any_folder(tmp_path: Path, capsys):
    workflow = api_workflow()
    workflow["30"] = json.loads(json.dumps(workflow["3"]))
    path = tmp_path / "two.json"
    path.write_text(json.dumps(workflow))
    out = tmp_path / "run"
    assert main(["run", "--image-model", f"comfyui:{path}", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert not out.exists() and "\n" not in err
    assert err.startswith(f"refineloop: error: --image-model 'comfyui:{path}' is a workflow refineloop cannot fill in")
    assert "nodes 3, 30" in err and "'refineloop sampler'" in err
    assert main(["run", "--image-model", f"comfyui:{tmp_path / 'none.json'}", "--output-dir", str(out)]) == 2
    assert "names a workflow file that does not exist" in capsys.readouterr().err


def test_a_workflow_that_starts_from_a_picture_is_filled_either_way():
    workflow = api_workflow()
    workflow["10"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    workflow["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    workflow["3"]["inputs"]["latent_image"] = ["11", 0]
    del workflow["5"]
    places = place(workflow)
    assert places.image is not None and places.image.node == "10" and places.size is None
    out, _ = fill(workflow, places, Values("p", "n", 1, image="up.png", denoise=0.5))
    assert out["10"]["inputs"]["image"] == "up.png" and out["3"]["inputs"]["latent_image"] == ["11", 0]
    out, filled = fill(workflow, places, Values("p", "n", 1, width=64, height=96))
    assert out["3"]["inputs"]["latent_image"] == ["refineloop_latent", 0]
    assert out["refineloop_latent"]["inputs"] == {"width": 64, "height": 96, "batch_size": 1}
    assert filled["refineloop_latent.width"] == 64
    with pytest.raises(WorkflowError, match="needs --width and --height"):
        fill(workflow, places, Values("p", "n", 1))
