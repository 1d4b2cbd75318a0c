"""Worlds: what knows the model and how to check it (atelier.worlds.base). `load_world` picks one
by a plain match on the config, and `rewrite_language` gives the rewrite strategy a world's
phrasings; this module is the only place outside a world that names it."""

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


def rewrite_language(config):
    """(request type, phrasings, phrasing features) the rewrite strategy uses in the config's world:
    the request a model rewriter answers, and the world's meaning-preserving phrasings of a prompt
    with the features a learned rule counts; the last two are None where the world has no builtin
    phrasings (open_vocab: a model rewriter only)."""
    match config.world_name:
        case "shapes":
            from atelier.worlds.shapes.rewrites import ShapesRewriteOneRequest, phrasing_features, phrasings

            return ShapesRewriteOneRequest, phrasings, phrasing_features
    from atelier.rewriter.request import RewriteOneRequest

    return RewriteOneRequest, None, None
