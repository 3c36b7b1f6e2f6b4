"""Flow directions to the model mesh: D8 validation, outlet snapping, accumulation, partitions."""

from ._mesh import Mesh

__all__ = ["Mesh"]
