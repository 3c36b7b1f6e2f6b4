"""Progress bars: one switch for every bar hybridhydro draws.

Every bar (a calibration's, the raster readers', the pipeline's stages) comes from :func:`bar`,
a console ``tqdm`` bar on stderr. It is drawn when the caller asks for it (``progress=True``,
the functions' default) **and** the environment variable ``HYBRIDHYDRO_PROGRESS`` is not one of
``0``, ``false``, ``no``, ``off`` (any case). The pipeline's runner sets ``HYBRIDHYDRO_PROGRESS=0``
in the kernels it starts: an executed notebook is the run's report, and a bar there is only
lines of carriage returns in a stderr cell output (the terminal shows papermill's bar over the
cells instead). Set it yourself to silence every bar of a script or a notebook at once.

``tqdm.auto`` is not used anywhere: in a Jupyter kernel without ``ipywidgets`` its mere import
prints a ``TqdmWarning`` ("IProgress not found") into the notebook.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["ENVIRONMENT_VARIABLE", "bar", "enabled"]

#: The environment variable that switches every progress bar off (``0``, ``false``, ``no``, ``off``).
ENVIRONMENT_VARIABLE = "HYBRIDHYDRO_PROGRESS"
_OFF = frozenset({"0", "false", "no", "off"})


def enabled(progress: bool = True) -> bool:
    """Whether a bar the caller asked for (``progress``) is drawn: not when the switch is off."""
    return bool(progress) and os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower() not in _OFF


def bar(iterable: Iterable | None = None, *, progress: bool = True, **options):
    """A console tqdm bar (``options`` are tqdm's), disabled unless :func:`enabled` (``progress``)."""
    from tqdm import tqdm  # the console bar: tqdm.auto warns in a kernel without ipywidgets

    return tqdm(iterable, disable=not enabled(progress), **options)
