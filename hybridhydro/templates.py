"""Where the stage notebooks and the parameter templates are, and ``init``, which copies them.

The repository keeps them at its top level, ``notebooks/*.py`` and ``params/**/*.yaml``, the
only committed copy. A wheel carries a copy made at build time (``setup.py``'s ``build_py``)
in the package, ``hybridhydro/_templates/{notebooks,params}``. :func:`templates_root` finds
them in that order:

1. a repository checkout (an editable install): the folder above the package, when it holds
   ``notebooks/`` and ``params/base.yaml``;
2. an installed package: ``importlib.resources.files("hybridhydro") / "_templates"``.

:func:`init` copies both folders into a working folder for a user to adapt; the runner then
uses the notebooks beside the parameter files (:func:`hybridhydro.pipeline.runner.find_notebooks`).
"""

from __future__ import annotations

import importlib.resources
import shutil
from dataclasses import dataclass
from pathlib import Path

#: Folder -> glob patterns of the files that make the templates (setup.py's TEMPLATES is the same table).
TEMPLATES = {"notebooks": ("*.py",), "params": ("**/*.yaml",)}

#: Where a wheel puts them, inside the package.
PACKAGE_FOLDER = "_templates"

#: The parameter file that ``init`` suggests running first: the synthetic basin, no download.
FIRST_PARAMS = Path("params") / "ci.yaml"

_PACKAGE_DIR = Path(__file__).resolve().parent


class TemplatesNotFound(FileNotFoundError):
    """Neither a repository checkout nor the installed package holds the notebooks and parameter files."""


@dataclass(frozen=True)
class Templates:
    """The folder that holds ``notebooks/`` and ``params/``, and where it comes from."""

    root: Path
    origin: str  # "repository" (a checkout, editable install) or "package" (a wheel's copy)

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def params(self) -> Path:
        return self.root / "params"

    def files(self) -> list[Path]:
        """Every template file, relative to :attr:`root`, in a stable order."""
        found = set()
        for folder, patterns in TEMPLATES.items():
            for pattern in patterns:
                found.update(p.relative_to(self.root) for p in (self.root / folder).glob(pattern) if p.is_file())
        return sorted(found)


def _holds_templates(root: Path) -> bool:
    return (root / "notebooks").is_dir() and (root / "params" / "base.yaml").is_file()


def repository_root() -> Path:
    """The folder above the package: a repository checkout's root when the package is run from one."""
    return _PACKAGE_DIR.parent


def packaged_root() -> Path:
    """Where a wheel put the templates (``hybridhydro/_templates``); it may not exist (an editable install)."""
    resource = importlib.resources.files("hybridhydro") / PACKAGE_FOLDER
    # A wheel installs as plain files, so this is a real folder; papermill and ``init`` need one.
    return Path(str(resource))


def templates() -> Templates:
    """The notebooks and parameter files of this installation: a repository checkout's, else the packaged ones.

    Raises
    ------
    TemplatesNotFound
        Neither holds them (a broken install); the message names both places and how to fix it.
    """
    checkout = repository_root()
    if _holds_templates(checkout):
        return Templates(checkout, "repository")
    packaged = packaged_root()
    if _holds_templates(packaged):
        return Templates(packaged, "package")
    raise TemplatesNotFound(
        f"hybridhydro's notebooks and parameter files are neither in a repository checkout ({checkout}/notebooks, "
        f"{checkout}/params) nor in the installed package ({packaged}): this installation is incomplete. Reinstall "
        "it (`pip install --force-reinstall hybridhydro`, or `pip install -e .` in a checkout), or pass the folder "
        "of the notebooks with --notebooks"
    )


def default_root() -> Path:
    """:func:`templates`' root, or, when there is none, where a wheel would have put them (for messages and defaults)."""
    try:
        return templates().root
    except TemplatesNotFound:
        return packaged_root()


class InitRefused(FileExistsError):
    """``init`` would overwrite files that are already there, and ``overwrite`` was not asked for."""


def init(directory: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the stage notebooks and the parameter files into ``directory`` for a user to adapt.

    Writes ``directory/notebooks/NN_name.py`` and ``directory/params/**.yaml`` (the folders are
    created). Run a case from there with ``python -m hybridhydro run directory/params/ci.yaml``:
    the runner uses ``directory/notebooks``, the notebooks beside the parameter files.

    Parameters
    ----------
    directory
        The working folder; it may exist and hold other files.
    overwrite
        Replace template files already in ``directory``. Without it, nothing is written when
        any of them exists.

    Returns
    -------
    list of Path
        The files written, absolute.

    Raises
    ------
    InitRefused
        Some of the files exist and ``overwrite`` is false; the message lists them.
    """
    source = templates()
    directory = Path(directory).expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise InitRefused(f"{directory} exists and is not a folder: give init a folder (new or existing)")
    files = source.files()
    existing = [f for f in files if (directory / f).exists()]
    if existing and not overwrite:
        shown = ", ".join(str(f) for f in existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise InitRefused(
            f"{directory} already holds {len(existing)} of the {len(files)} template files ({shown}): nothing was written. To replace them with the templates of this "
            "hybridhydro (your changes to them are lost), add --overwrite; to keep them, give init another folder"
        )
    written = []
    for relative in files:
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.root / relative, target)
        written.append(target)
    return written
