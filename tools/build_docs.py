"""Build the documentation site: the tutorials (stages 00-06 executed on params/ci.yaml), the API
reference from the docstrings, docs/*.md and the README as the home page, into build/site/.

    .venv/bin/python tools/build_docs.py            # what `make docs` runs
    .venv/bin/python tools/build_docs.py --check    # then open every page in headless Chromium

Steps, each a function the site test calls too:

1. ``executed_notebooks``: the executed stage notebooks of ``<run-root>/ci`` (default
   build/docs-run/ci); stages that are missing there are run first with
   ``python -m hybridhydro run params/ci.yaml --output-root <run-root> --overwrite``.
2. ``stage_sources``: the site's sources under build/docs-src: README.md as index.md, every
   docs/*.md as it is (only links to repository files outside the site are turned into code
   text, since the site has no page for them), docs/figures, the executed notebooks, one API
   page per public module, and MathJax 2 from the ``jupyter-server-mathjax`` wheel so that the
   equations render without a network.
3. ``build_site``: ``mkdocs build --strict`` with mkdocs.yml plus the navigation written beside
   the sources (build/mkdocs.gen.yml), into build/site/.
4. ``check_site`` (``--check``): every page opened in headless Chromium (Debian's
   /usr/bin/chromium through playwright): content present, no console error, every image
   loaded, no error output, no broken internal link or anchor, no request leaving the machine.

The site is plain files: open build/site/index.html, or serve it with
``.venv/bin/python -m http.server -d build/site``.
"""

from __future__ import annotations

import argparse
import ast
import html.parser
import json
import os
import pprint
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
SRC = BUILD / "docs-src"
SITE = BUILD / "site"
RUN_ROOT = BUILD / "docs-run"
PARAMS = ROOT / "params" / "ci.yaml"
CHROMIUM = os.environ.get("HYBRIDHYDRO_CHROMIUM", "/usr/bin/chromium")

#: The pipeline stages the site shows, in order; 00 only where notebooks/00_new_basin.py exists.
STAGES = ("00_new_basin", "01_basin", "02_forward", "03_calibrate", "04_regionalize", "05_hybrid",
          "06_validate")
#: Stages that are studies (they feed no other stage): each runs into a folder of its own.
STUDY_STAGES = ("00_new_basin",)
#: The public modules documented beside the top level, when hybridhydro.PUBLIC_MODULES is absent.
EXTRA_API_MODULES = ("plotting", "report")


# ----------------------------------------------------------------------------------------------
# 1. executed notebooks


def available_stages(notebooks: Path = ROOT / "notebooks") -> tuple[list[str], list[str]]:
    """The stages with a notebook in ``notebooks/``, and those skipped (no such notebook)."""
    present = [s for s in STAGES if (notebooks / f"{s}.py").exists()]
    return present, [s for s in STAGES if s not in present]


def executed_notebooks(run_root: Path = RUN_ROOT, params: Path = PARAMS, *, rerun: bool = False,
                       run_stale: bool = True, log=print) -> dict[str, Path]:
    """The executed notebook of every available stage, running the pipeline for missing ones.

    A notebook counts as executed when one of its code cells has an output and, unless
    ``run_stale`` is false, it is newer than its ``notebooks/<stage>.py`` (an edited tutorial is
    run again).
    """
    stages, _ = available_stages()
    case = _case_name(params)
    # A study stage (00) builds its own basin and feeds no other stage: it runs into a folder of
    # its own, so that rerunning it never makes the pipeline's record call 01-06 stale.
    studies = [s for s in stages if s in STUDY_STAGES]
    pipeline = [s for s in stages if s not in STUDY_STAGES]
    where = {s: run_root / (f"study-{s}" if s in studies else "") / case for s in stages}

    def fresh(stage: str) -> bool:
        nb = where[stage] / f"{stage}.ipynb"
        if not nb.exists():
            return False
        if run_stale and nb.stat().st_mtime < (ROOT / "notebooks" / f"{stage}.py").stat().st_mtime:
            return False
        cells = json.loads(nb.read_text()).get("cells", [])
        return any(c.get("outputs") for c in cells if c.get("cell_type") == "code")

    def run(todo: list[str], root: Path) -> None:
        log(f"running {', '.join(todo)} on {params.name} into {root / case} ...")
        cmd = [sys.executable, "-m", "hybridhydro", "run", str(params), "--output-root", str(root),
               "--stages", ",".join(todo), "--no-progress"]
        if (root / case).exists():
            cmd.append("--overwrite")
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)

    missing = pipeline if rerun else [s for s in pipeline if not fresh(s)]
    if missing:
        # The pipeline checks that earlier stages ran with these parameters: run from the first
        # missing stage on, so every later stage reads what the earlier ones just wrote.
        run(pipeline[pipeline.index(missing[0]):], run_root)
    for stage in studies:
        if rerun or not fresh(stage):
            run([stage], run_root / f"study-{stage}")
    return {s: where[s] / f"{s}.ipynb" for s in stages}


def _case_name(params: Path) -> str:
    import yaml

    return yaml.safe_load(params.read_text()).get("case", params.stem)


# ----------------------------------------------------------------------------------------------
# 2. sources


def _init_module() -> tuple[dict[str, object], dict[str, str]]:
    """``__all__``/``PUBLIC_MODULES`` of hybridhydro/__init__.py, and where each name is imported
    from (``from .mesh import Mesh``: Mesh -> mesh), read without importing hybridhydro."""
    tree = ast.parse((ROOT / "hybridhydro" / "__init__.py").read_text())
    values: dict[str, object] = {}
    exported: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("__all__", "PUBLIC_MODULES"):
                values[node.targets[0].id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            exported.update({a.asname or a.name: node.module for a in node.names})
    return values, exported


def public_api() -> tuple[list[str], list[str]]:
    """``hybridhydro.__all__`` and the public modules documented beside the top level."""
    values, _ = _init_module()
    modules = list(values.get("PUBLIC_MODULES", ()))
    modules += [m for m in EXTRA_API_MODULES if m not in modules]
    return list(values["__all__"]), modules


def exported_from() -> dict[str, str]:
    """For each name of ``__all__``, the module the top level imports it from."""
    values, exported = _init_module()
    return {k: v for k, v in exported.items() if k in values["__all__"]}


def identifier(name: str) -> str:
    """The path the API reference documents a top-level name under (its anchor in the site).

    ``hybridhydro.<name>``, except where a submodule has the name too (``simulate``): griffe
    reads that path as the module, so the object is documented where it is defined."""
    module = exported_from().get(name)
    pkg = ROOT / "hybridhydro"
    if module and ((pkg / f"{name}.py").exists() or (pkg / name).is_dir()):
        return f"hybridhydro.{module}.{name}"
    return f"hybridhydro.{name}"


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def rewrite_links(text: str, page: Path, site_pages: dict[Path, str]) -> str:
    """Point the relative links of ``page`` (a repository file) at the site's pages.

    ``site_pages`` maps repository paths to their path in the site. A link to a repository file
    the site does not hold becomes code text (the path is still said, nothing dangles)."""

    def repl(m: re.Match) -> str:
        bang, label, target = m.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            return m.group(0)
        path, _, anchor = target.partition("#")
        resolved = (page.parent / urllib.parse.unquote(path)).resolve()
        if resolved in site_pages:
            here = Path(site_pages[page.resolve()]).parent
            rel = os.path.relpath(site_pages[resolved], here)
            return f"{bang}[{label}]({rel}{'#' + anchor if anchor else ''})"
        if bang:
            return m.group(0)  # an image that is not there: left for the strict build to refuse
        return f"{label} (`{os.path.relpath(resolved, ROOT)}`)" if label.strip("`") != os.path.relpath(
            resolved, ROOT) else f"`{os.path.relpath(resolved, ROOT)}`"

    return _LINK.sub(repl, text)


def _notebook_title(nb_path: Path, stage: str) -> str:
    for cell in json.loads(nb_path.read_text()).get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            m = re.search(r"^#\s+(.+)$", src, re.M)
            if m:
                return m.group(1).strip()
            break
    return stage


def _mathjax_dir() -> Path | None:
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    return static if (static / "MathJax.js").exists() else None


MATHJAX_CONFIG = """MathJax.Hub.Config({
  "HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null,
    // MathJax's blank probe font is url('about:blank'), which Chromium reports as a console
    // error; a local() font that is never there probes the same way without a request.
    styles: {"@font-face": {"font-family": "MathJax_Blank", src: "local('MathJax_Blank_absent')"}}},
  SVG: {font: "STIX-Web"},
  menuSettings: {zoom: "None"}
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/hybridhydro.js");
"""


def copy_mathjax(src: Path) -> bool:
    """MathJax 2 into ``src/assets/mathjax`` (False where jupyter-server-mathjax is missing:
    the equations then show as TeX text)."""
    mathjax = _mathjax_dir()
    if mathjax is None:
        return False
    shutil.copytree(mathjax, src / "assets" / "mathjax", ignore=shutil.ignore_patterns("*.md", "localization"))
    # The wheel ships the STIX-Web fonts only; MathJax's default (TeX fonts) would be a 404.
    (src / "assets" / "mathjax" / "config" / "local").mkdir(parents=True, exist_ok=True)
    (src / "assets" / "mathjax" / "config" / "local" / "hybridhydro.js").write_text(MATHJAX_CONFIG)
    return True


def format_parameters_cell(source: str, width: int = 96) -> str:
    """The cell papermill injects (``params = {...}`` on one line) laid out for a reader: each
    literal assignment pretty-printed over several lines, the same values (comments and any
    statement that is not a literal assignment kept as written)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    first = tree.body[0].lineno - 1 if tree.body else len(lines)
    out = lines[:first]  # the "# Parameters" comment above the assignments
    for node in tree.body:
        text = ast.get_source_segment(source, node)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = text
            else:
                name = node.targets[0].id
                pad = " " * (len(name) + 3)
                text = f"{name} = " + pprint.pformat(value, width=width - len(pad), sort_dicts=False).replace("\n", "\n" + pad)
        out.append(text)
    return "\n".join(out) + "\n"


def copy_notebook(nb: Path, dest: Path) -> None:
    """Copy an executed notebook for the site, its injected parameters laid out by
    :func:`format_parameters_cell`."""
    data = json.loads(nb.read_text())
    for cell in data.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = format_parameters_cell(source)
    dest.write_text(json.dumps(data, indent=1, ensure_ascii=False))


def stage_sources(notebooks: dict[str, Path], src: Path = SRC) -> list:
    """Write the site's sources into ``src`` and return the navigation (mkdocs ``nav``)."""
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    docs = sorted((ROOT / "docs").glob("*.md"))
    site_pages = {(ROOT / "README.md").resolve(): "index.md"}
    site_pages.update({d.resolve(): d.name for d in docs if d.name != "index.md"})
    for stage in notebooks:
        site_pages[(ROOT / "notebooks" / f"{stage}.py").resolve()] = f"{stage}.ipynb"
    for fig in sorted((ROOT / "docs" / "figures").glob("*")):
        site_pages[fig.resolve()] = f"figures/{fig.name}"

    readme = rewrite_links((ROOT / "README.md").read_text(), ROOT / "README.md", site_pages)
    (src / "index.md").write_text(readme)
    for d in docs:
        if d.name == "index.md":
            continue
        (src / d.name).write_text(rewrite_links(d.read_text(), d, site_pages))
    if (ROOT / "docs" / "figures").is_dir():
        shutil.copytree(ROOT / "docs" / "figures", src / "figures")

    tutorials = []
    for stage, nb in notebooks.items():
        copy_notebook(nb, src / f"{stage}.ipynb")
        title = _notebook_title(nb, stage)
        tutorials.append({title if title.startswith(stage[:2]) else f"{stage[:2]} · {title}": f"{stage}.ipynb"})
    _, skipped = available_stages()
    overview = ["# The tutorials", "",
                "The pipeline's stages, executed on the tiny synthetic case (`params/ci.yaml`) "
                "when the site was built: every output and figure below is what the notebook "
                "printed and drew. `make demo` runs the same notebooks on the Cance basin.", ""]
    overview += [f"* [{list(t)[0]}]({list(t.values())[0]})" for t in tutorials]
    if skipped:
        overview += ["", "Not in this build (no notebook in `notebooks/`): "
                     + ", ".join(f"`{s}`" for s in skipped) + "."]
    (src / "tutorials.md").write_text("\n".join(overview) + "\n")

    names, modules = public_api()
    api = src / "api"
    api.mkdir()
    top = ["# `hybridhydro`", "",
           "The top level, `import hybridhydro as hh`: every name of `hybridhydro.__all__`, "
           "from the docstrings.", ""]
    top += [f"::: {identifier(n)}" for n in names if not n.startswith("__")]
    (api / "index.md").write_text("\n\n".join(top) + "\n")
    api_nav = [{"hybridhydro": "api/index.md"}]
    for mod in modules:
        (api / f"{mod}.md").write_text(f"# `hybridhydro.{mod}`\n\n::: hybridhydro.{mod}\n"
                                       "    options:\n      show_root_heading: false\n")
        api_nav.append({f"hybridhydro.{mod}": f"api/{mod}.md"})

    copy_mathjax(src)

    def title(md: str, fallback: str) -> str:
        m = re.search(r"^#\s+(.+)$", (src / md).read_text(), re.M)
        return m.group(1).strip() if m else fallback

    return [
        {"Home": "index.md"},
        {"Tutorials": [{"Overview": "tutorials.md"}] + tutorials},
        {"Guides": [{title(d.name, d.stem): d.name} for d in docs if d.name != "index.md"]},
        {"API reference": api_nav},
    ]


# ----------------------------------------------------------------------------------------------
# 3. build


def build_site(nav: list, src: Path = SRC, site: Path = SITE, *, strict: bool = True) -> Path:
    """``mkdocs build`` of ``src`` with mkdocs.yml and ``nav`` into ``site``."""
    import yaml

    mathjax = (src / "assets" / "mathjax" / "MathJax.js").exists()
    config = {
        "INHERIT": os.path.relpath(ROOT / "mkdocs.yml", src.parent),
        "docs_dir": os.path.relpath(src, src.parent),
        "site_dir": os.path.relpath(site, src.parent),
        "nav": nav,
    }
    plugins = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["plugins"]
    for plugin in plugins:
        if isinstance(plugin, dict) and "mkdocs-jupyter" in plugin:
            # Notebook pages sit at the site's top level (use_directory_urls: false), so one
            # relative address serves all of them, from a server and from file:// alike.
            plugin["mkdocs-jupyter"]["custom_mathjax_url"] = (
                "assets/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/hybridhydro" if mathjax else "")
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            # mkdocs.yml's paths are the repository's; the generated file lives in build/
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str((ROOT / p).resolve()) for p in python.get("paths", ["."])]
            exts = python.get("options", {}).get("extensions", [])
            python.setdefault("options", {})["extensions"] = [
                str(ROOT / e) if isinstance(e, str) and ".py" in e else e for e in exts]
    config["plugins"] = plugins
    gen = src.parent / "mkdocs.gen.yml"
    gen.write_text(yaml.safe_dump(config, sort_keys=False))
    if site.exists():
        shutil.rmtree(site)
    cmd = [sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(gen)] + (["--strict"] if strict else [])
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs 2 is not what this site uses
    subprocess.run(cmd, cwd=ROOT, check=True, env=env)
    return site


def build(run_root: Path = RUN_ROOT, *, rerun: bool = False, run_stale: bool = True, log=print) -> Path:
    """The whole build: notebooks, sources, site. Returns the site's folder."""
    notebooks = executed_notebooks(run_root, rerun=rerun, run_stale=run_stale, log=log)
    _, skipped = available_stages()
    for s in skipped:
        log(f"note: notebooks/{s}.py does not exist: the site has no page for it")
    nav = stage_sources(notebooks)
    return build_site(nav)


# ----------------------------------------------------------------------------------------------
# 4. check


@dataclass
class Page:
    """What the static reading of one HTML file found."""

    ids: set = field(default_factory=set)
    links: list = field(default_factory=list)  # (attribute, value)


class _Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.page = Page()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key) and (key == "id" or tag == "a"):
                self.page.ids.add(a[key])
        if tag in ("a", "link") and a.get("href") is not None:
            self.page.links.append(("href", a["href"]))
        if tag in ("img", "script", "source", "iframe") and a.get("src"):
            self.page.links.append(("src", a["src"]))


def _read(path: Path) -> Page:
    c = _Collector()
    c.feed(path.read_text(errors="replace"))
    return c.page


ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|-{20,}\s*\n?\s*\w+(Error|Exception)\b")


def check_links(site: Path) -> list[str]:
    """Every internal href/src of every page resolves to a file of the site, and its anchor
    to an id of that file. Returns the problems, one line each."""
    site = site.resolve()
    pages = {p: _read(p) for p in sorted(site.rglob("*.html")) if not p.relative_to(site).parts[0] == "assets"}
    problems = []
    for path, page in list(pages.items()):
        rel = path.relative_to(site)
        for attr, value in page.links:
            value = value.strip()
            if not value or re.match(r"^(data|mailto|javascript|tel):", value, re.I):
                continue
            parsed = urllib.parse.urlsplit(value)
            if parsed.scheme or parsed.netloc:
                continue  # a link out of the site (the offline check is the browser's)
            target = path if not parsed.path else (
                (site / parsed.path.lstrip("/")) if parsed.path.startswith("/") else path.parent / urllib.parse.unquote(parsed.path))
            target = Path(os.path.normpath(target))
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(site) or not target.exists():
                problems.append(f"{rel}: broken link {attr}={value!r} (no file {target})")
                continue
            anchor = urllib.parse.unquote(parsed.fragment)
            if anchor and target.suffix == ".html" and target not in pages:
                pages[target] = _read(target)
            if anchor and target.suffix == ".html" and anchor not in pages[target].ids:
                problems.append(f"{rel}: broken anchor {value!r} (no id {anchor!r} in {target.relative_to(site)})")
    return problems


def check_notebooks(notebooks: dict[str, Path]) -> list[str]:
    """No executed notebook holds an error output."""
    problems = []
    for stage, nb in notebooks.items():
        for i, cell in enumerate(json.loads(nb.read_text()).get("cells", [])):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    problems.append(f"{stage}: cell {i} has an error output: {out.get('ename')}: {out.get('evalue')}")
    return problems


def expected_images(nb: Path) -> int:
    """How many figures the notebook's outputs hold (one per image output)."""
    count = 0
    for cell in json.loads(nb.read_text()).get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            count += any(k.startswith("image/") for k in data)
    return count


_PAGE_JS = """
async () => {
  const imgs = Array.from(document.images);
  for (const img of imgs) { img.loading = 'eager'; }
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const main = document.querySelector('article') || document.querySelector('main') || document.body;
  return {
    text: (main.innerText || '').trim().length,
    mainText: (main.innerText || ''),
    images: imgs.map(i => ({src: i.currentSrc.slice(0, 80), w: i.naturalWidth, alt: i.alt})),
    outputImages: document.querySelectorAll('.jp-OutputArea-output img, .jp-OutputArea-output svg').length,
    errorOutputs: document.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]').length,
  };
}
"""


def serve(site: Path):
    """A local HTTP server of ``site`` on a free port (a thread); returns (server, base URL)."""
    handler = partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def check_pages(site: Path, expected: dict[str, int] | None = None, *, screenshots: Path | None = None,
                chromium: str = CHROMIUM) -> tuple[list[str], dict]:
    """Open every page of ``site`` in headless Chromium; return (problems, per-page facts).

    ``expected`` maps a page (relative path) to the number of figures its notebook holds. Any
    request for another host is refused and reported: the site must work offline."""
    from playwright.sync_api import sync_playwright

    site = site.resolve()
    problems: list[str] = []
    facts: dict[str, dict] = {}
    server, base = serve(site)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            outside: list[str] = []

            def route(r):
                if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()

            context.route("**/*", route)
            page = context.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
            failed: list[str] = []
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            for path in sorted(site.rglob("*.html")):
                rel = path.relative_to(site).as_posix()
                if rel == "404.html" or rel.startswith("assets/"):
                    continue
                console.clear(), outside.clear(), failed.clear()
                t0 = time.perf_counter()
                page.goto(base + rel, wait_until="load")
                page.wait_for_load_state("networkidle")
                info = page.evaluate(_PAGE_JS)
                info["seconds"] = round(time.perf_counter() - t0, 2)
                facts[rel] = info
                if info["text"] == 0:
                    problems.append(f"{rel}: the page's main content is empty")
                for msg in console:
                    problems.append(f"{rel}: console error: {msg[:300]}")
                for url in outside:
                    problems.append(f"{rel}: request out of the site (fails offline): {url[:200]}")
                for r in failed:
                    problems.append(f"{rel}: failed request {r[:200]}")
                for img in info["images"]:
                    if img["w"] == 0:
                        problems.append(f"{rel}: image not loaded: {img['src']!r} (alt {img['alt']!r})")
                if ERROR_TEXT.search(info["mainText"]) or info["errorOutputs"]:
                    problems.append(f"{rel}: an error output or a traceback is shown")
                want = (expected or {}).get(rel)
                if want is not None and info["outputImages"] < want:
                    problems.append(f"{rel}: {info['outputImages']} figures shown, the notebook has {want}")
                if screenshots is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshots / (rel.replace("/", "_") + ".png")))
            browser.close()
    finally:
        server.shutdown()
    return problems, facts


def check_site(site: Path = SITE, notebooks: dict[str, Path] | None = None, **kw) -> list[str]:
    """All the checks: links and anchors, notebooks' outputs, every page in Chromium."""
    notebooks = notebooks or {}
    expected = {f"{s}.html": expected_images(nb) for s, nb in notebooks.items()}
    problems = check_links(site) + check_notebooks(notebooks)
    browser_problems, _ = check_pages(site, expected, **kw)
    return problems + browser_problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rerun", action="store_true", help="run the pipeline again even if notebooks exist")
    ap.add_argument("--keep-stale", action="store_true",
                    help="reuse executed notebooks older than their notebooks/*.py (a quick rebuild of the pages)")
    ap.add_argument("--check", action="store_true", help="then open every page in headless Chromium")
    ap.add_argument("--screenshots", type=Path, help="with --check: a PNG of every page into this folder")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    site = build(rerun=args.rerun, run_stale=not args.keep_stale)
    print(f"site written to {site.relative_to(ROOT)}/ in {time.perf_counter() - t0:.0f} s "
          f"(open {site.relative_to(ROOT)}/index.html)")
    if args.check:
        problems = check_site(site, executed_notebooks(run_stale=False), screenshots=args.screenshots)
        for p in problems:
            print("PROBLEM", p)
        print(f"{len(problems)} problems")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
