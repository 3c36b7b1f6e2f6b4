"""A griffe extension for the API reference (mkdocs.yml): the docstrings' Sphinx roles as Markdown.

The docstrings are numpydoc and cross-reference with Sphinx roles (``:func:`simulate```,
``:mod:`~hybridhydro.report```). mkdocstrings would print those literally; this turns each into
inline code, linked where the site documents the target: a name of ``hybridhydro.__all__``
(``simulate``, ``hybridhydro.simulate``, or ``hybridhydro.mesh.Mesh`` where the top level imports
``Mesh`` from ``.mesh``) or a public module (``hybridhydro.report``). Other targets (private
modules, members) stay code without a link, so no link can dangle.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import griffe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_docs import exported_from, identifier, public_api  # noqa: E402  (one source of the names)

_ROLE = re.compile(r":(?:py:)?(func|class|mod|data|meth|attr|obj|exc|const|ref|term):`([^`]+)`")
_names, _modules = public_api()
NAMES, MODULES, EXPORTED_FROM = set(_names), set(_modules), exported_from()
IDS = {n: identifier(n) for n in NAMES}


def convert(text: str) -> str:
    """Every Sphinx role of ``text`` as Markdown inline code, linked where the site has the target."""

    def repl(m: re.Match) -> str:
        role, target = m.groups()
        target = target.strip()
        label = None
        if "<" in target and target.endswith(">"):  # :func:`text <target>`
            label, target = target[:-1].split("<", 1)
            label = label.strip()
        short = target.startswith("~")
        target = target.lstrip("~.")
        shown = label or (target.rsplit(".", 1)[-1] if short else target)
        bare = target.removeprefix("hybridhydro.")
        module, _, name = bare.rpartition(".")
        if role == "mod" and bare in MODULES and bare not in NAMES:
            return f"[`{shown}`][hybridhydro.{bare}]"
        if role != "mod" and bare in NAMES:
            return f"[`{shown}`][{IDS[bare]}]"
        if role != "mod" and target.startswith("hybridhydro.") and EXPORTED_FROM.get(name) == module:
            # hybridhydro.mesh.Mesh: the object the top level re-exports as hybridhydro.Mesh
            return f"[`{shown}`][{IDS[name]}]"
        return f"`{shown}`"

    return _ROLE.sub(repl, text)


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
