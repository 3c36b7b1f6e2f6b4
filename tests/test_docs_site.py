"""The documentation site (`make docs`, tools/build_docs.py), opened page by page in headless Chromium.

Two parts:

* the checker itself, on a tiny hand-made site where each check must fail once (a missing
  image, a broken link, a broken anchor, a console error, an empty page, a traceback, a request
  leaving the machine, a notebook figure missing): the link checks need nothing, the page checks
  need Chromium;
* the real site, built on params/ci.yaml (the executed notebooks of build/docs-run/ci are reused
  when they are newer than notebooks/*.py, otherwise the pipeline runs first, a few minutes),
  every page opened: content present, no console error, every image loaded, every figure of the
  notebooks shown, no error output, no broken internal link or anchor, nothing fetched from
  outside (the site works offline).

Needs Debian's Chromium (`apt-get install chromium`) and the docs extra (`make docs` installs
it); without either the tests that need it skip and say which.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_docs", ROOT / "tools" / "build_docs.py")
build_docs = importlib.util.module_from_spec(_spec)
sys.modules["build_docs"] = build_docs  # dataclasses look their module up
_spec.loader.exec_module(build_docs)


def _needs_chromium():
    if not Path(build_docs.CHROMIUM).exists():
        pytest.skip(f"headless Chromium not found at {build_docs.CHROMIUM}: `apt-get install chromium` "
                    "(Debian's package) to open the documentation site in a browser")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed: `make docs` installs the docs extra (.[docs]) into .venv")


def _needs_docs_extra():
    missing = [m for m in ("mkdocs", "mkdocs_jupyter", "mkdocstrings_handlers", "material", "jupyter_server_mathjax")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)} missing): "
                    "run `make docs` (it installs .[docs] into .venv and builds the site)")


# ------------------------------------------------------------------------------------------
# the checker, on a tiny hand-made site

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><nav><a href="index.html">home</a></nav><article>{body}</article></body></html>"""

# 1x1 PNG
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("tiny-site")
    (site / "img").mkdir()
    (site / "img" / "ok.png").write_bytes(PNG)
    pages = {
        "index.html": '<h1 id="top">Home</h1><p>fine <a href="good.html#part">a part</a></p>'
                      '<img src="img/ok.png" alt="ok">',
        "good.html": '<h2 id="part">Part</h2><p>text</p><a href="#top-of-good">x</a><span id="top-of-good"></span>',
        "missing_image.html": '<p>a figure</p><img src="img/gone.png" alt="gone">',
        "broken_link.html": '<p>see <a href="nowhere.html">nowhere</a></p>',
        "broken_anchor.html": '<p>see <a href="good.html#no-such-part">there</a></p>',
        "console_error.html": "<p>script</p><script>throw new Error('boom in the page')</script>",
        "empty.html": "",
        "traceback.html": "<pre>Traceback (most recent call last):\n  File \"x\", line 1\nValueError: bad</pre>",
        "outside.html": '<p>remote</p><img src="https://cdn.example.org/logo.png" alt="remote">',
        "notebook.html": '<div class="jp-OutputArea-output"><img src="img/ok.png" alt="fig 1"></div><p>one of two</p>',
    }
    for name, body in pages.items():
        (site / name).write_text(PAGE.format(title=name, body=body))
    return site


def _by_page(problems: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in problems:
        out.setdefault(p.split(":", 1)[0], []).append(p)
    return out


def test_link_checker_finds_broken_links_anchors_and_missing_files(tiny_site):
    found = _by_page(build_docs.check_links(tiny_site))
    assert set(found) == {"missing_image.html", "broken_link.html", "broken_anchor.html"}, found
    assert "img/gone.png" in found["missing_image.html"][0]
    assert "broken link" in found["broken_link.html"][0]
    assert "broken anchor" in found["broken_anchor.html"][0] and "no-such-part" in found["broken_anchor.html"][0]


def test_the_injected_parameters_are_laid_out_for_a_reader(tmp_path):
    import ast

    params = {"case": "ci", "basin": {"source": "synthetic", "start": None, "synthetic": {"nrow": 12, "dt": 3600.0}},
              "calibration": {"models": ["gr4-uniform", "gr4-ann"], "mapping": "distributed", "flag": True,
                              "note": "a long description that pprint wraps at its spaces " * 3}}
    source = f"# Parameters\nparams = {params!r}\nstage = '01_basin'\noutput_dir = 'runs/ci'\nx = len(params)\n"
    assert max(map(len, source.splitlines())) > 200  # papermill's one line
    laid_out = build_docs.format_parameters_cell(source)
    assert laid_out.startswith("# Parameters\nparams = {'case': 'ci',\n")
    assert max(map(len, laid_out.splitlines())) <= 96
    assert laid_out.rstrip().endswith("x = len(params)")  # not a literal: kept as written
    before, after = {}, {}
    exec(source, {}, before)
    exec(laid_out, {}, after)
    assert after == before and ast.parse(laid_out)
    nb = tmp_path / "nb.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": source, "outputs": [],
                                         "metadata": {"tags": ["injected-parameters"]}}]}))
    build_docs.copy_notebook(nb, tmp_path / "site.ipynb")
    assert json.loads((tmp_path / "site.ipynb").read_text())["cells"][0]["source"] == laid_out


def test_notebook_checker_finds_error_outputs(tmp_path):
    nb = tmp_path / "nb.ipynb"
    nb.write_text(json.dumps({"cells": [
        {"cell_type": "code", "source": "1/0", "metadata": {}, "outputs": [
            {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": []}]},
        {"cell_type": "code", "source": "plot()", "metadata": {}, "outputs": [
            {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}, "metadata": {}}]},
    ]}))
    problems = build_docs.check_notebooks({"nb": nb})
    assert len(problems) == 1 and "ZeroDivisionError" in problems[0]
    assert build_docs.expected_images(nb) == 1


def test_page_checker_fails_each_broken_page_once(tiny_site):
    _needs_chromium()
    problems, facts = build_docs.check_pages(tiny_site, expected={"notebook.html": 2})
    found = _by_page(problems)
    assert "index.html" not in found and "good.html" not in found, found
    assert any("image not loaded" in p and "gone.png" in p for p in found["missing_image.html"])
    assert any("console error" in p and "boom in the page" in p for p in found["console_error.html"])
    assert any("main content is empty" in p for p in found["empty.html"])
    assert any("traceback" in p for p in found["traceback.html"])
    assert any("out of the site" in p and "cdn.example.org" in p for p in found["outside.html"])
    assert any("1 figures shown, the notebook has 2" in p for p in found["notebook.html"])
    # the static checks are not the browser's business: a broken href alone passes here
    assert "broken_link.html" not in found
    assert facts["index.html"]["images"][0]["w"] == 1


def test_page_checker_flags_an_error_cell_as_mkdocs_jupyter_renders_it(tmp_path):
    """The real rendering path: a notebook with an error output and a figure, built by mkdocs."""
    _needs_docs_extra()
    _needs_chromium()
    import base64

    src = tmp_path / "src"
    src.mkdir()
    (src / "index.md").write_text("# Home\n\nThe [notebook](nb.ipynb).\n")
    red = "\u001b[0;31m"
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                                                          "display_name": "Python 3"}},
          "cells": [
              {"cell_type": "markdown", "id": "a", "metadata": {}, "source": "# A notebook\n\nwith $x^2$"},
              {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": 1, "source": "plot()",
               "outputs": [{"output_type": "display_data", "metadata": {},
                            "data": {"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"}}]},
              {"cell_type": "code", "id": "c", "metadata": {}, "execution_count": 2, "source": "1 / 0",
               "outputs": [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                            "traceback": [f"{red}{'-' * 75}\u001b[0m",
                                          f"{red}ZeroDivisionError\u001b[0m      Traceback (most recent call last)",
                                          "Cell In[2], line 1\n----> 1 1 / 0",
                                          f"{red}ZeroDivisionError\u001b[0m: division by zero"]}]},
          ]}
    (src / "nb.ipynb").write_text(json.dumps(nb))
    build_docs.copy_mathjax(src)
    site = build_docs.build_site([{"Home": "index.md"}, {"Notebook": "nb.ipynb"}], src, tmp_path / "site")
    assert build_docs.check_links(site) == []
    problems, facts = build_docs.check_pages(site, {"nb.html": 1})
    found = _by_page(problems)
    assert "index.html" not in found, found
    assert any("error output or a traceback" in p for p in found["nb.html"]), found
    assert len(found["nb.html"]) == 1, found  # the figure and the equation are fine
    assert facts["nb.html"]["outputImages"] >= 1


# ------------------------------------------------------------------------------------------
# the real site


@pytest.fixture(scope="module")
def site():
    _needs_docs_extra()
    _needs_chromium()
    t0 = time.perf_counter()
    notebooks = build_docs.executed_notebooks()
    t1 = time.perf_counter()
    _, skipped = build_docs.available_stages()
    nav = build_docs.stage_sources(notebooks)
    path = build_docs.build_site(nav)
    t2 = time.perf_counter()
    print(f"\nnotebooks {t1 - t0:.0f} s, mkdocs build {t2 - t1:.0f} s; skipped stages: {skipped or 'none'}")
    return path, notebooks


@pytest.mark.site
def test_site_has_every_page(site):
    path, notebooks = site
    assert (path / "index.html").exists()
    assert "hybridhydro" in (path / "index.html").read_text()
    for stage in notebooks:
        assert (path / f"{stage}.html").exists(), f"no page for the tutorial {stage}"
    for doc in (ROOT / "docs").glob("*.md"):
        assert (path / f"{doc.stem}.html").exists(), f"no page for docs/{doc.name}"
    names, modules = build_docs.public_api()
    api = (path / "api" / "index.html").read_text()
    undocumented = [n for n in names if not n.startswith("__") and f'id="{build_docs.identifier(n)}"' not in api]
    assert undocumented == [], f"names of hybridhydro.__all__ without an entry in the API reference: {undocumented}"
    for mod in modules:
        assert (path / "api" / f"{mod}.html").exists()


@pytest.mark.site
def test_site_links_and_notebooks(site):
    path, notebooks = site
    assert build_docs.check_links(path) == []
    assert build_docs.check_notebooks(notebooks) == []


@pytest.mark.site
def test_every_page_renders_in_chromium(site):
    path, notebooks = site
    expected = {f"{s}.html": build_docs.expected_images(nb) for s, nb in notebooks.items()}
    assert sum(expected.values()) > 0, "the executed notebooks hold no figure at all"
    shots = os.environ.get("HYBRIDHYDRO_DOCS_SCREENSHOTS")
    problems, facts = build_docs.check_pages(path, expected, screenshots=Path(shots) if shots else None)
    assert problems == [], "\n".join(problems)
    assert len(facts) >= len(notebooks) + 3
