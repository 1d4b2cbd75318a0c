"""diffusers' custom-pipeline entry for this folder:

    DiffusionPipeline.from_pretrained(folder, custom_pipeline=f"{folder}/pipeline.py", trust_remote_code=True)

loads the shapes model as atelier's own `load_pipeline(folder)` does (atelier must be installed:
the pipeline class lives in atelier.worlds.shapes.model)."""

from atelier.worlds.shapes.model import ShapesPipeline

__all__ = ["ShapesPipeline"]
