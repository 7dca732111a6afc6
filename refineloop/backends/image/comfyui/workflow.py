"""A user's ComfyUI workflow (API format): where each value refineloop sends goes, and the workflow filled in.

An API-format workflow maps node ids to `{"class_type", "inputs", "_meta": {"title"}}`; an input is either a
literal or a link `[source node id, output index]`. `place` finds, once, the node and input of every value a
run fills in, by following the sampler's links:

- **prompt / negative**: the sampler's (or its guider's) `positive` / `negative` link, back through conditioning
  nodes, to the one text encoder with a literal `text` (`text_g` and `text_l` for SDXL's encoder); a text that
  is itself linked is filled on the string node it comes from;
- **seed**: the sampler's `seed` / `noise_seed`, or the node its `noise` link comes from (RandomNoise);
- **steps / denoise**: the sampler's own, or those of the scheduler node its `sigmas` come from;
- **guidance**: the sampler's `cfg`, or its guider's (CFGGuider);
- **size**: the empty-latent node its `latent_image` comes from (`width`, `height`, `batch_size`);
- **init image**: the LoadImage node behind a VAEEncode there, in a workflow that starts from a picture.

A node the user titled (`_meta.title`, any case) `refineloop prompt`, `refineloop negative`, `refineloop seed`,
`refineloop sampler`, `refineloop size`, `refineloop image` or `refineloop output` is taken instead of following
links. A value with no place, or with several, is refused in one line naming the node ids and the title that
settles it. Everything here is pure: no file, no network.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from refineloop.errors import SettingsError

Workflow = dict[str, dict[str, Any]]

#: The titles a user may give nodes, by what refineloop fills in through them.
TITLES = {
    "prompt": "refineloop prompt",
    "negative": "refineloop negative",
    "seed": "refineloop seed",
    "sampler": "refineloop sampler",
    "size": "refineloop size",
    "image": "refineloop image",
    "output": "refineloop output",
}
SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
OUTPUTS = ("SaveImage", "PreviewImage")
TEXT_INPUTS = ("text", "text_g", "text_l")
SEED_INPUTS = ("seed", "noise_seed")
#: Inputs of a primitive node holding the value a link carries (string, int and seed primitives).
VALUE_INPUTS = ("value", "string", "text", "seed", "noise_seed", "int")
#: Node ids refineloop adds when it turns the workflow image-to-image (or back); a user's ids are numbers.
ADDED_LOAD, ADDED_ENCODE, ADDED_LATENT = "refineloop_load", "refineloop_encode", "refineloop_latent"


class WorkflowError(SettingsError):
    """A workflow refineloop cannot fill in unambiguously; the message names the nodes and the fix."""


@dataclass(frozen=True)
class Slot:
    """Where one value goes: a node and the inputs set to it."""

    node: str
    inputs: tuple[str, ...]

    def label(self) -> str:
        """`6.text`: how provenance and messages name it."""
        return "+".join(f"{self.node}.{name}" for name in self.inputs)


@dataclass(frozen=True)
class Placement:
    """Every place a run's values go in one workflow."""

    sampler: str
    prompt: Slot
    negative: Slot | None
    seed: Slot
    steps: Slot | None
    guidance: Slot | None
    denoise: Slot | None
    size: Slot | None
    """The empty latent's width and height (txt2img workflows)."""
    image: Slot | None
    """The LoadImage node's `image` (workflows that start from a picture)."""
    vae: list[Any] | None
    """The VAE link a VAEEncode added for image-to-image reads."""
    output: str


@dataclass(frozen=True)
class Values:
    """What one image's prompt fills in; None leaves the workflow's own value."""

    prompt: str
    negative: str
    seed: int
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    image: str | None = None
    """The uploaded init image's name on the server (img2img), or None."""
    denoise: float | None = None


def parse(text: str, where: str) -> Workflow:
    """The workflow in `text`, checked to be API format; WorkflowError naming `where` otherwise."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{where} is not JSON ({exc.msg}, line {exc.lineno}): export it again") from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(
            f"{where} is a ComfyUI UI workflow: export it in API format (Workflow > Export (API), or the "
            "'Save (API Format)' button with dev mode on)"
        )
    if not isinstance(data, dict) or not data:
        raise WorkflowError(f"{where} holds no nodes: export an API-format workflow from ComfyUI")
    for node_id, node in data.items():
        if not (isinstance(node, dict) and isinstance(node.get("class_type"), str)):
            raise WorkflowError(f"{where}: node {node_id} has no class_type: export an API-format workflow")
        if not isinstance(node.setdefault("inputs", {}), dict):
            raise WorkflowError(f"{where}: node {node_id} has inputs that are not an object: export it again")
    return data


def place(workflow: Workflow) -> Placement:
    """Where each value goes; WorkflowError naming the node ids when one has no place or several."""
    sampler = _sampler(workflow)
    inputs = workflow[sampler]["inputs"]
    guider = _linked(workflow, inputs.get("guider"))
    conditioning = workflow[guider]["inputs"] if guider else inputs
    positive = conditioning.get("positive", conditioning.get("conditioning"))
    prompt = _titled_text(workflow, "prompt") or _text_slot(workflow, positive, sampler, "positive")
    if prompt is None:
        raise WorkflowError(
            f"found no prompt text behind sampler {sampler}'s positive input: title the prompt's text node "
            f"'{TITLES['prompt']}'"
        )
    negative = _titled_text(workflow, "negative")
    if negative is None and "negative" in conditioning:
        negative = _text_slot(workflow, conditioning["negative"], sampler, "negative")
    if negative is not None and negative.node == prompt.node:
        raise WorkflowError(
            f"node {prompt.node} feeds both the positive and the negative input of sampler {sampler}: give the "
            f"negative its own text node, or title the prompt node '{TITLES['prompt']}' and the negative "
            f"'{TITLES['negative']}'"
        )
    sigmas = _linked(workflow, inputs.get("sigmas"))
    latent, image = _latent(workflow, sampler)
    return Placement(
        sampler=sampler,
        prompt=prompt,
        negative=negative,
        seed=_seed(workflow, sampler),
        steps=_number_slot(workflow, "steps", sampler, sigmas),
        guidance=_number_slot(workflow, "cfg", sampler, guider),
        denoise=_number_slot(workflow, "denoise", sampler, sigmas),
        size=latent,
        image=image,
        vae=_vae(workflow, sampler),
        output=_output(workflow),
    )


def fill(workflow: Workflow, placement: Placement, values: Values) -> tuple[Workflow, dict[str, Any]]:
    """A copy of `workflow` with `values` in their places, and what was filled in (`node.input` -> value)."""
    filled: dict[str, Any] = {}
    out = copy.deepcopy(workflow)

    def put(slot: Slot | None, value: Any) -> None:
        if slot is None or value is None:
            return
        for name in slot.inputs:
            out[slot.node]["inputs"][name] = value
            filled[f"{slot.node}.{name}"] = value

    put(placement.prompt, values.prompt)
    put(placement.negative, values.negative)
    put(placement.seed, values.seed)
    put(placement.steps, values.steps)
    put(placement.guidance, values.guidance)
    if values.image is None:
        _text_to_image(out, placement, values, put)
    else:
        _image_to_image(out, placement, values, put)
    return out, filled


def hidden_values(workflow: Workflow, placement: Placement) -> dict[str, Any]:
    """The workflow's own steps and guidance (what a run that leaves them empty draws with)."""
    found: dict[str, Any] = {}
    for key, slot in (("steps", placement.steps), ("guidance", placement.guidance)):
        value = workflow[slot.node]["inputs"].get(slot.inputs[0]) if slot else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[key] = value
    return found


# ------------------------------------------------------------------------------------------------ filling


def _text_to_image(out: Workflow, placement: Placement, values: Values, put: Any) -> None:
    if placement.size is not None:
        put(Slot(placement.size.node, ("width",)), values.width)
        put(Slot(placement.size.node, ("height",)), values.height)
        if "batch_size" in out[placement.size.node]["inputs"]:
            put(Slot(placement.size.node, ("batch_size",)), 1)  # one image per prompt: each has its own seed
        return
    # A workflow that starts from a picture draws from text through an empty latent refineloop adds.
    if values.width is None or values.height is None:
        raise WorkflowError(
            f"the workflow starts from a picture (node {placement.image.node if placement.image else '?'}), so "
            "refineloop needs --width and --height to draw its first image from text"
        )
    out[ADDED_LATENT] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": values.width, "height": values.height, "batch_size": 1},
    }
    out[placement.sampler]["inputs"]["latent_image"] = [ADDED_LATENT, 0]
    put(Slot(ADDED_LATENT, ("width",)), values.width)
    put(Slot(ADDED_LATENT, ("height",)), values.height)


def _image_to_image(out: Workflow, placement: Placement, values: Values, put: Any) -> None:
    if placement.image is not None:
        put(placement.image, values.image)
    else:
        # A text-to-image workflow starts from the picture through a LoadImage and VAEEncode refineloop adds.
        out[ADDED_LOAD] = {"class_type": "LoadImage", "inputs": {"image": values.image}}
        out[ADDED_ENCODE] = {"class_type": "VAEEncode", "inputs": {"pixels": [ADDED_LOAD, 0], "vae": placement.vae}}
        out[placement.sampler]["inputs"]["latent_image"] = [ADDED_ENCODE, 0]
        put(Slot(ADDED_LOAD, ("image",)), values.image)
    put(placement.denoise, values.denoise)


def image_to_image_gap(placement: Placement) -> str:
    """Why this workflow cannot draw image-to-image ("" when it can)."""
    if placement.denoise is None:
        return f"sampler {placement.sampler} has no denoise input (use KSampler or a BasicScheduler's denoise)"
    if placement.image is None and placement.vae is None:
        return "no VAE to encode the init image with (no VAEDecode after the sampler)"
    return ""


# ------------------------------------------------------------------------------------------------ finding


def _titles(workflow: Workflow, what: str) -> list[str]:
    title = TITLES[what]
    return [
        node_id
        for node_id, node in workflow.items()
        if str((node.get("_meta") or {}).get("title", "")).strip().lower() == title
    ]


def _one_titled(workflow: Workflow, what: str) -> str | None:
    found = _titles(workflow, what)
    if len(found) > 1:
        raise WorkflowError(f"nodes {', '.join(found)} are all titled '{TITLES[what]}': keep the title on one")
    return found[0] if found else None


def _linked(workflow: Workflow, value: Any) -> str | None:
    """The node a link comes from, or None for a literal (or a link to a node that is not there)."""
    if isinstance(value, list) and len(value) == 2 and str(value[0]) in workflow:
        return str(value[0])
    return None


def _sampler(workflow: Workflow) -> str:
    titled = _one_titled(workflow, "sampler")
    if titled:
        return titled
    found = [
        node_id
        for node_id, node in workflow.items()
        if node["class_type"] in SAMPLERS
        or ("latent_image" in node["inputs"] and "sampler" in node["class_type"].lower())
    ]
    if not found:
        raise WorkflowError(
            f"the workflow has no sampler node ({', '.join(SAMPLERS)}): title the one that draws '{TITLES['sampler']}'"
        )
    if len(found) > 1:
        raise WorkflowError(
            f"the workflow has several samplers (nodes {', '.join(found)}): title the one whose prompt and seed "
            f"refineloop sets '{TITLES['sampler']}'"
        )
    return found[0]


def _titled_text(workflow: Workflow, what: str) -> Slot | None:
    node_id = _one_titled(workflow, what)
    if node_id is None:
        return None
    slot = _text_inputs(workflow, node_id)
    if slot is None:
        raise WorkflowError(f"node {node_id} is titled '{TITLES[what]}' but has no text input to fill")
    return slot


def _text_inputs(workflow: Workflow, node_id: str) -> Slot | None:
    """The node's literal text inputs, or those of the string node its text comes from."""
    inputs = workflow[node_id]["inputs"]
    names = tuple(name for name in TEXT_INPUTS if isinstance(inputs.get(name), str))
    if names:
        return Slot(node_id, names)
    for name in TEXT_INPUTS:
        source = _linked(workflow, inputs.get(name))
        if source is not None:
            found = _value_input(workflow, source, str)
            if found is not None:
                return found
    if isinstance(inputs.get("value"), str) or isinstance(inputs.get("string"), str):
        return _value_input(workflow, node_id, str)
    return None


def _value_input(workflow: Workflow, node_id: str, kind: Any) -> Slot | None:
    inputs = workflow[node_id]["inputs"]
    for name in VALUE_INPUTS:
        value = inputs.get(name)
        if isinstance(value, kind) and not isinstance(value, bool):
            return Slot(node_id, (name,))
    return None


def _text_slot(workflow: Workflow, link: Any, sampler: str, side: str) -> Slot | None:
    """The one text node behind a conditioning link; WorkflowError when there are several."""
    found = {slot.node: slot for slot in _text_sources(workflow, link, set())}
    if len(found) > 1:
        title = TITLES["prompt" if side == "positive" else "negative"]
        raise WorkflowError(
            f"sampler {sampler}'s {side} input comes from several text nodes ({', '.join(sorted(found))}): title "
            f"the one refineloop writes '{title}'"
        )
    return next(iter(found.values()), None)


def _text_sources(workflow: Workflow, link: Any, seen: set[str]) -> Iterator[Slot]:
    node_id = _linked(workflow, link)
    if node_id is None or node_id in seen:
        return
    seen.add(node_id)
    slot = _text_inputs(workflow, node_id)
    if slot is not None:
        yield slot
        return
    inputs = workflow[node_id]["inputs"]
    if "positive" in inputs and "negative" in inputs:
        # A node that passes both sides through (ControlNetApplyAdvanced): its outputs are (positive, negative).
        names = ["positive" if link[1] == 0 else "negative"]
    else:
        names = [name for name in inputs if "conditioning" in name]
    for name in names:
        yield from _text_sources(workflow, inputs.get(name), seen)


def _seed(workflow: Workflow, sampler: str) -> Slot:
    titled = _one_titled(workflow, "seed")
    if titled:
        slot = _value_input(workflow, titled, int)
        if slot is None:
            raise WorkflowError(f"node {titled} is titled '{TITLES['seed']}' but holds no whole-number seed")
        return slot
    inputs = workflow[sampler]["inputs"]
    for name in SEED_INPUTS:
        if isinstance(inputs.get(name), int) and not isinstance(inputs.get(name), bool):
            return Slot(sampler, (name,))
    for name in (*SEED_INPUTS, "noise"):
        source = _linked(workflow, inputs.get(name))
        if source is not None and (slot := _value_input(workflow, source, int)) is not None:
            return slot
    raise WorkflowError(f"found no seed for sampler {sampler}: title the node holding it '{TITLES['seed']}'")


def _number_slot(workflow: Workflow, name: str, sampler: str, helper: str | None) -> Slot | None:
    """`name` on the sampler (literal, or from a primitive node), else on its helper node (scheduler, guider)."""
    for node_id in (sampler, helper):
        if node_id is None:
            continue
        value = workflow[node_id]["inputs"].get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Slot(node_id, (name,))
        source = _linked(workflow, value)
        if source is not None and name in ("steps", "cfg", "denoise"):
            found = _value_input(workflow, source, int | float)
            if found is not None:
                return found
    return None


def _latent(workflow: Workflow, sampler: str) -> tuple[Slot | None, Slot | None]:
    """(the empty latent's size, the LoadImage's image) behind the sampler's latent_image: one of them."""
    titled_size, titled_image = _one_titled(workflow, "size"), _one_titled(workflow, "image")
    if titled_size or titled_image:
        size = Slot(titled_size, ("width", "height")) if titled_size else None
        image = Slot(titled_image, ("image",)) if titled_image else None
        return (size, None) if size else (None, image)
    node_id = _linked(workflow, workflow[sampler]["inputs"].get("latent_image"))
    seen: set[str] = set()
    while node_id is not None and node_id not in seen:
        seen.add(node_id)
        inputs = workflow[node_id]["inputs"]
        if isinstance(inputs.get("width"), int) and isinstance(inputs.get("height"), int):
            return Slot(node_id, ("width", "height")), None
        if isinstance(inputs.get("image"), str):
            return None, Slot(node_id, ("image",))
        node_id = next(
            (_linked(workflow, inputs[name]) for name in ("samples", "pixels", "image", "latent") if name in inputs),
            None,
        )
    raise WorkflowError(
        f"found neither an empty latent nor a LoadImage behind sampler {sampler}'s latent_image: title the node "
        f"with the width and height '{TITLES['size']}'"
    )


def _vae(workflow: Workflow, sampler: str) -> list[Any] | None:
    """The VAE link of the decoder that reads the sampler's output (where an added VAEEncode gets its VAE)."""
    for node in workflow.values():
        inputs = node["inputs"]
        if _linked(workflow, inputs.get("samples")) == sampler and isinstance(inputs.get("vae"), list):
            return list(inputs["vae"])
    return None


def _output(workflow: Workflow) -> str:
    titled = _one_titled(workflow, "output")
    if titled:
        return titled
    found = [node_id for node_id, node in workflow.items() if node["class_type"] in OUTPUTS]
    if len(found) != 1:
        what = f"several image outputs (nodes {', '.join(found)})" if found else "no SaveImage or PreviewImage node"
        raise WorkflowError(f"the workflow has {what}: title the one refineloop keeps '{TITLES['output']}'")
    return found[0]
