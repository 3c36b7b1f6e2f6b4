"""Flow directions to the model mesh: D8 validation, outlet snapping, accumulation, partitions.

Public API
----------
:func:`read_flwdir`            read a D8 GeoTIFF (codes, georeference)
:func:`validate_flwdir`        check codes, loops and outflow; errors name the cell and the fix
:func:`build_mesh`             gauges (or a bbox) -> :class:`Mesh`, like ``smash.factory.generate_mesh``
:func:`build_mesh_from_raster` :func:`read_flwdir` + :func:`build_mesh`
:func:`detect_sink`            cells in pairs pointing at each other (all four axes)
:func:`from_esri`              ESRI / pyflwdir "d8" coding (1, 2, 4, ..., 128) -> ours (1..8)
:func:`as_codes`               check that an array holds our D8 codes (int8, 0 = no data)
:func:`is_geographic`          whether a CRS (EPSG code or WKT) is in degrees
:func:`to_pyflwdir`            our codes as a :class:`pyflwdir.FlwdirRaster` (validated first)
:func:`upstream_masks`         the cells draining through given cells (gauge catchments)
:func:`catchment_means`        NaN-aware means of a (time, y, x) field over catchments, as smash
:func:`routing_plan`           the mesh's :class:`RoutingPlan`: the cells in routing order
:func:`downstream`, :func:`topological_levels`, :func:`accumulate`
                               the D8 graph of a whole raster: downstream cells, levels, upstream sums
"""

from ._build import build_mesh, build_mesh_from_raster, cell_sizes, is_geographic, read_flwdir
from ._d8 import (DCOL, DROW, PYFLWDIR_NODATA, accumulate, as_codes, detect_sink, downstream, from_esri, to_pyflwdir,
                  topological_levels, validate_flwdir)
from ._mesh import Mesh
from ._plan import RoutingPlan, build_routing_plan, routing_plan
from ._upstream import catchment_means, upstream_masks

__all__ = [
    "DCOL",
    "DROW",
    "PYFLWDIR_NODATA",
    "Mesh",
    "RoutingPlan",
    "accumulate",
    "as_codes",
    "downstream",
    "topological_levels",
    "build_routing_plan",
    "build_mesh",
    "build_mesh_from_raster",
    "catchment_means",
    "cell_sizes",
    "detect_sink",
    "is_geographic",
    "from_esri",
    "read_flwdir",
    "routing_plan",
    "to_pyflwdir",
    "upstream_masks",
    "validate_flwdir",
]
