"""Build hook: the wheel carries the top-level notebooks/ and params/ as package data.

The repository keeps ``notebooks/*.py`` and ``params/**/*.yaml`` at its top level (the design
card), and they are the only committed copy. A wheel needs them inside the package, so
``build_py`` copies them into ``hybridhydro/_templates/`` of the build tree, where
:mod:`hybridhydro.templates` finds them with ``importlib.resources`` once installed. An
editable install copies nothing: it reads the repository's folders. Everything else about the
package is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

#: Folder of the repository -> glob patterns of the files shipped from it (MANIFEST.in puts the
#: same files in the sdist; hybridhydro.templates.TEMPLATES is the same table, for `init`).
TEMPLATES = {"notebooks": ("*.py",), "params": ("**/*.yaml",)}
PACKAGE_FOLDER = Path("hybridhydro") / "_templates"


class BuildPyWithTemplates(build_py):
    """``build_py``, plus the notebooks and parameter files copied to ``hybridhydro/_templates``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the repository's own folders
        target = Path(self.build_lib) / PACKAGE_FOLDER
        shutil.rmtree(target, ignore_errors=True)  # nothing stale from an earlier build
        copied = 0
        for folder, patterns in TEMPLATES.items():
            for pattern in patterns:
                for source in sorted((ROOT / folder).glob(pattern)):
                    destination = target / folder / source.relative_to(ROOT / folder)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, destination)
                    copied += 1
        if not (target / "params" / "base.yaml").is_file() or not any((target / "notebooks").glob("*.py")):
            raise SystemExit(
                f"hybridhydro build: notebooks/*.py and params/base.yaml not found under {ROOT} "
                f"({copied} file(s) copied); build from a repository checkout or from the sdist, "
                "whose MANIFEST.in includes them"
            )


setup(cmdclass={"build_py": BuildPyWithTemplates})
