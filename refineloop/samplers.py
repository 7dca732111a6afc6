"""The sampler names users know (`--scheduler`), and what each one is in diffusers and in A1111's metadata.

One table serves three readers: the settings' check and `--help` (the names), the diffusers backend (the
scheduler class and the config options that make it that sampler), and the PNG metadata (A1111's `Sampler` and
`Schedule type` words, which sd-parsers, sd-prompt-reader and the web UIs read). Nothing here imports
diffusers: `--help` and the sketch painter never pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sampler:
    """One `--scheduler` choice."""

    name: str
    """What the flag takes (lower case, as the web UIs' names are usually typed)."""
    scheduler_class: str
    """The diffusers scheduler class drawing with it."""
    a1111: str
    """A1111's `Sampler:` word for it."""
    schedule: str = "Automatic"
    """A1111's `Schedule type:` word (Karras where the sigmas are Karras's, else Automatic)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Config options set on top of the model's own scheduler config."""
    needs: str = ""
    """A Python package the scheduler class imports when it draws (one line asks for it when missing)."""


_KARRAS = {"use_karras_sigmas": True}
_DPMPP = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_DPMPP_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}

SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("euler", "EulerDiscreteScheduler", "Euler"),
        Sampler("euler_karras", "EulerDiscreteScheduler", "Euler", "Karras", _KARRAS),
        Sampler("euler_a", "EulerAncestralDiscreteScheduler", "Euler a"),
        Sampler("heun", "HeunDiscreteScheduler", "Heun"),
        Sampler("heun_karras", "HeunDiscreteScheduler", "Heun", "Karras", _KARRAS),
        Sampler("lms", "LMSDiscreteScheduler", "LMS"),
        Sampler("lms_karras", "LMSDiscreteScheduler", "LMS", "Karras", _KARRAS),
        Sampler("dpm2", "KDPM2DiscreteScheduler", "DPM2"),
        Sampler("dpm2_a", "KDPM2AncestralDiscreteScheduler", "DPM2 a"),
        Sampler("dpm++_2m", "DPMSolverMultistepScheduler", "DPM++ 2M", "Automatic", _DPMPP),
        Sampler("dpm++_2m_karras", "DPMSolverMultistepScheduler", "DPM++ 2M", "Karras", {**_DPMPP, **_KARRAS}),
        Sampler("dpm++_2m_sde", "DPMSolverMultistepScheduler", "DPM++ 2M SDE", "Automatic", _DPMPP_SDE),
        Sampler(
            "dpm++_2m_sde_karras",
            "DPMSolverMultistepScheduler",
            "DPM++ 2M SDE",
            "Karras",
            {**_DPMPP_SDE, **_KARRAS},
        ),
        Sampler("dpm++_sde", "DPMSolverSDEScheduler", "DPM++ SDE", needs="torchsde"),
        Sampler("dpm++_sde_karras", "DPMSolverSDEScheduler", "DPM++ SDE", "Karras", _KARRAS, needs="torchsde"),
        Sampler("dpm++_2s", "DPMSolverSinglestepScheduler", "DPM++ 2S", "Automatic", _DPMPP),
        Sampler("ddim", "DDIMScheduler", "DDIM"),
        Sampler("ddpm", "DDPMScheduler", "DDPM"),
        Sampler("pndm", "PNDMScheduler", "PLMS"),
        Sampler("unipc", "UniPCMultistepScheduler", "UniPC"),
        Sampler("deis", "DEISMultistepScheduler", "DEIS"),
        Sampler("lcm", "LCMScheduler", "LCM"),
        Sampler("tcd", "TCDScheduler", "TCD"),
    )
}

#: Consistency samplers: no diffusers scheduler lists them as compatible, yet they draw from any noise-predicting
#: model (they are what an LCM or TCD LoRA is trained for). Flow-matching models are still refused.
CONSISTENCY = ("LCMScheduler", "TCDScheduler")


def sampler_names() -> tuple[str, ...]:
    """Every `--scheduler` name, in the table's order."""
    return tuple(SAMPLERS)


def sampler_for(scheduler_class: str, config: dict[str, Any]) -> Sampler | None:
    """The table's entry a loaded scheduler is (its class, with the config options the entry sets), if any."""
    matches = [s for s in SAMPLERS.values() if s.scheduler_class == scheduler_class]
    for sampler in sorted(matches, key=lambda s: -len(s.config)):
        if all(config.get(key) == value for key, value in sampler.config.items()):
            return sampler
    return None
