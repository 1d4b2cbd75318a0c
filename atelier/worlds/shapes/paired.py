"""Paired differences of two evaluations: now shared by every world (atelier.worlds.judgment)."""

from atelier.worlds.judgment import paired_difference

__all__ = ["paired_difference"]
