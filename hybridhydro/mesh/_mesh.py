"""The :class:`Mesh`: static arrays that describe the model grid, and their xarray form."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from ..basin import annotate


@dataclass(frozen=True)
class Mesh:
    """The model grid, cropped to the modelled domain (plain NumPy arrays, no xarray).

    All 2-D arrays have shape ``(nrow, ncol)``; row 0 is the northern edge. Inactive cells keep
    their underlying values (as smash keeps them under its masks), except ``flwdst`` which is
    ``NaN`` off the gauged network.

    Attributes
    ----------
    flwdir : int8
        D8 codes (1=N, 2=NE, 3=E, 4=SE, 5=S, 6=SW, 7=W, 8=NW; 0 = no data).
    active_cell : bool
        Cells of the modelled domain.
    dx, dy : float32
        Cell sizes in metres.
    flwacc : float32
        Upstream drainage area in m², the cell included.
    flwdst : float32
        Flow distance in metres to the most downstream gauge; ``NaN`` off the network.
    flwpar : int32
        Routing partition: 1 for cells with no upstream cell, else 1 + max over upstream cells.
    xmin, ymax : float
        Coordinates of the grid's north-west corner (CRS units).
    xres, yres : float
        Grid resolution (CRS units, both positive).
    epsg : int
        EPSG code of the CRS (0 where unknown).
    gauge_row, gauge_col : int32, shape (ng,)
        Snapped outlet cell of each gauge (0-based).
    code : str, shape (ng,)
        Gauge codes.
    gauge_x, gauge_y : float64, shape (ng,)
        Declared outlet coordinates (CRS units).
    area, area_dln : float32, shape (ng,)
        Declared and delineated drainage areas in m².
    crs_wkt : str
        The CRS as WKT ("" where unknown).
    """

    flwdir: np.ndarray
    active_cell: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    flwacc: np.ndarray
    flwdst: np.ndarray
    flwpar: np.ndarray
    xmin: float
    ymax: float
    xres: float
    yres: float
    epsg: int
    gauge_row: np.ndarray
    gauge_col: np.ndarray
    code: np.ndarray
    gauge_x: np.ndarray
    gauge_y: np.ndarray
    area: np.ndarray
    area_dln: np.ndarray
    crs_wkt: str = field(default="")

    @property
    def nrow(self) -> int:
        return int(self.flwdir.shape[0])

    @property
    def ncol(self) -> int:
        return int(self.flwdir.shape[1])

    @property
    def nac(self) -> int:
        """Number of active cells."""
        return int(self.active_cell.sum())

    @property
    def ng(self) -> int:
        """Number of gauges."""
        return int(self.gauge_row.shape[0])

    @property
    def npar(self) -> int:
        """Number of routing partitions."""
        return int(self.flwpar.max()) if self.flwpar.size else 0

    @property
    def ncpar(self) -> np.ndarray:
        """Number of cells in each partition 1..npar (whole cropped grid, as smash counts them)."""
        return np.bincount(self.flwpar.ravel(), minlength=self.npar + 1)[1:].astype(np.int32)

    @property
    def cscpar(self) -> np.ndarray:
        """Cells in the partitions before each one: ``cscpar[p] = ncpar[:p].sum()`` (starts at 0, as smash).

        Partition ``p`` (0-based) is ``cpar_to_rowcol[cscpar[p] : cscpar[p] + ncpar[p]]``.
        """
        ncpar = self.ncpar
        return (np.cumsum(ncpar) - ncpar).astype(np.int32)

    @property
    def cpar_to_rowcol(self) -> np.ndarray:
        """``(nrow*ncol, 2)`` cells grouped by partition, column-major scan order within each."""
        rows, cols = np.meshgrid(np.arange(self.nrow), np.arange(self.ncol), indexing="ij")
        # column-major scan: column outer, row inner
        order = np.lexsort((rows.T.ravel(), cols.T.ravel(), self.flwpar.T.ravel()))
        rc = np.stack([rows.T.ravel()[order], cols.T.ravel()[order]], axis=1)
        return rc.astype(np.int32)

    def x_centres(self) -> np.ndarray:
        """Cell-centre x coordinates, west to east (CRS units)."""
        return self.xmin + (np.arange(self.ncol) + 0.5) * self.xres

    def y_centres(self) -> np.ndarray:
        """Cell-centre y coordinates, north to south (CRS units)."""
        return self.ymax - (np.arange(self.nrow) + 0.5) * self.yres

    def to_dataset(self) -> xr.Dataset:
        """The mesh as the static part of a basin Dataset (see :mod:`hybridhydro.basin`)."""
        yx = ("y", "x")
        ds = xr.Dataset(
            {
                "flwdir": (yx, self.flwdir.astype(np.int8)),
                "active_cell": (yx, self.active_cell.astype(bool)),
                "flwacc": (yx, self.flwacc.astype(np.float32)),
                "flwdst": (yx, self.flwdst.astype(np.float32)),
                "flwpar": (yx, self.flwpar.astype(np.int32)),
                "dx": (yx, self.dx.astype(np.float32)),
                "dy": (yx, self.dy.astype(np.float32)),
                "gauge_x": ("gauge", np.asarray(self.gauge_x, dtype=np.float64)),
                "gauge_y": ("gauge", np.asarray(self.gauge_y, dtype=np.float64)),
                "gauge_row": ("gauge", np.asarray(self.gauge_row, dtype=np.int32)),
                "gauge_col": ("gauge", np.asarray(self.gauge_col, dtype=np.int32)),
                "area": ("gauge", np.asarray(self.area, dtype=np.float32)),
                "area_dln": ("gauge", np.asarray(self.area_dln, dtype=np.float32)),
            },
            coords={
                "y": ("y", self.y_centres(), {"units": "CRS units", "long_name": "cell-centre y"}),
                "x": ("x", self.x_centres(), {"units": "CRS units", "long_name": "cell-centre x"}),
                "gauge": ("gauge", np.asarray(self.code, dtype=str)),
            },
            attrs={
                "xres": float(self.xres),
                "yres": float(self.yres),
                "xmin": float(self.xmin),
                "ymax": float(self.ymax),
                "epsg": int(self.epsg),
            },
        )
        if self.crs_wkt or self.epsg:
            import rioxarray  # noqa: F401  (registers the .rio accessor)

            ds = ds.rio.write_crs(self.crs_wkt or f"EPSG:{self.epsg}")
        return annotate(ds)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> "Mesh":
        """Rebuild the :class:`Mesh` from a basin Dataset (inverse of :meth:`to_dataset`)."""
        crs_wkt = ""
        if "spatial_ref" in ds.coords:
            crs_wkt = str(ds["spatial_ref"].attrs.get("crs_wkt", ""))
        return cls(
            flwdir=ds["flwdir"].values.astype(np.int8),
            active_cell=ds["active_cell"].values.astype(bool),
            dx=ds["dx"].values.astype(np.float32),
            dy=ds["dy"].values.astype(np.float32),
            flwacc=ds["flwacc"].values.astype(np.float32),
            flwdst=ds["flwdst"].values.astype(np.float32),
            flwpar=ds["flwpar"].values.astype(np.int32),
            xmin=float(ds.attrs["xmin"]),
            ymax=float(ds.attrs["ymax"]),
            xres=float(ds.attrs["xres"]),
            yres=float(ds.attrs["yres"]),
            epsg=int(ds.attrs.get("epsg", 0)),
            gauge_row=ds["gauge_row"].values.astype(np.int32),
            gauge_col=ds["gauge_col"].values.astype(np.int32),
            code=ds["gauge"].values.astype(str),
            gauge_x=ds["gauge_x"].values.astype(np.float64),
            gauge_y=ds["gauge_y"].values.astype(np.float64),
            area=ds["area"].values.astype(np.float32),
            area_dln=ds["area_dln"].values.astype(np.float32),
            crs_wkt=crs_wkt,
        )
