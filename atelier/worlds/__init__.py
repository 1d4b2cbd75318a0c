"""Worlds: what knows the model and how to check it (atelier.worlds.base). `load_world` picks one
by a plain match on the config; it is the only place outside a world that names it."""

from __future__ import annotations


def load_world(config):
    """The config's world, its models not loaded yet (each loads once, when first used)."""
    match config.world_name:
        case "shapes":
            from atelier.worlds.shapes.world import ShapesWorld

            return ShapesWorld(config)
        case "open_vocab":
            from atelier.worlds.open_vocab.world import OpenVocabWorld

            return OpenVocabWorld(config)
    raise ValueError(f"unknown world {config.world_name!r}")
