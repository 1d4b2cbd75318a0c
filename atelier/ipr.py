"""Temporary home of the relabel rules while the strategies move (see atelier.strategies.ipr)."""

from atelier.strategies.ipr import ipr_rows  # noqa: F401
from atelier.tools.relabel import relabel_objects  # noqa: F401
from atelier.worlds.shapes.relabel import relabel  # noqa: F401
