"""Settings of the `rpo` strategy: Rich Preference Optimization (issue 19). Imported by atelier.config; keep it light (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    editor: Literal["auto", "layout", "sdedit", "controlnet"] = Field(
        "auto", description="who carries out the edit instructions. shapes: 'layout' (move/add/remove/recolour the "
        "detected objects) or 'sdedit' (the shapes model redraws from partial noise); open_vocab: 'controlnet' "
        "(ControlNet img2img, the original as control image; needs rpo.controlnet) or 'sdedit'. auto = layout on "
        "shapes; on open_vocab controlnet when rpo.controlnet is set, else sdedit")
    controlnet: str | None = Field(None, description="open_vocab: hub id or folder of the ControlNet of the 'controlnet' editor")
    strength: float = Field(0.6, gt=0, le=1, description="SDEdit / img2img strength of the 'sdedit' and 'controlnet' editors")
    blend_strength: float = Field(0.0, ge=0, le=1, description="layout editor: strength of a light SDEdit pass over the "
                                  "edited layout (0 = none)")
    margin: float = Field(1.0, ge=0, description="a pair is kept when the edited image's CCSR question score beats the "
                          "original's by at least this much (ties and smaller gains are recorded and dropped)")
    objective: Literal["dpo", "sft", "both"] = Field(
        "dpo", description="dpo = Diffusion-DPO on (edited, original) pairs, reference = adapters disabled; sft = LoRA "
        "SFT on the edited winners with their prompts; both = SFT, then DPO continuing from it")
    keep_correct: bool = Field(False, description="SFT also on the round's samples judged right, with their prompts "
                               "(weight train.correct_weight), as IPR does; the edited winners then stand in for IPR's "
                               "relabels. DPO reads only the pairs")
    beta: float = Field(5000.0, gt=0, description="Diffusion-DPO β (5000 for SD 1.5 in Wallace et al. 2023)")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate of the DPO steps (SFT uses train.learning_rate)")
    max_edits: int | None = Field(None, ge=1, description="wrong images critiqued per round at most (in order); null = all")


def editor_name(config) -> str:
    """The editor a config runs (rpo.editor with 'auto' resolved for its world)."""
    if config.rpo.editor != "auto":
        return config.rpo.editor
    if config.world_name == "shapes":
        return "layout"
    return "controlnet" if config.rpo.controlnet else "sdedit"


def check(config) -> None:
    """Cross-field checks of a whole Config using this strategy; raise ValueError(one line)."""
    rpo, editor = config.rpo, editor_name(config)
    shapes = config.world_name == "shapes"
    if shapes and editor == "controlnet":
        raise ValueError("rpo.editor 'controlnet' is for open_vocab models; the shapes world edits with 'layout' or 'sdedit'")
    if not shapes and editor == "layout":
        raise ValueError("rpo.editor 'layout' needs the shapes world's exact detector; use 'controlnet' or 'sdedit'")
    if editor == "controlnet" and rpo.controlnet is None:
        raise ValueError("rpo.editor 'controlnet' needs rpo.controlnet (a ControlNet hub id or folder)")
