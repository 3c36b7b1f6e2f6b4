"""Command line: ``python -m hybridhydro {check,run,prepare} PARAMS`` (also the ``hybridhydro`` script).

Exit status: 0 on success, 1 when a stage fails, 2 when the parameters or the request are wrong
(nothing ran).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .pipeline import params as _params
from .pipeline import runner as _runner


def _stage_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hybridhydro",
        description="Run the hybridhydro notebook pipeline for one case (a parameter file).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{check,run,prepare}")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("params", type=Path, help="the case's parameter file, e.g. params/cance.yaml")
        sub.add_argument(
            "--notebooks", type=Path, default=_runner.NOTEBOOKS_DIR, help="folder of the stage notebooks (default: %(default)s)"
        )
        return sub

    check = add("check", "validate the parameters, print them merged (with a line on each key) and the stages to run")
    check.add_argument("--stages", type=_stage_list, default=None, help="comma-separated stages, as for run")

    run = add("run", "execute the stages in order into <output-root>/<case>/<stage>.ipynb")
    run.add_argument("--stages", type=_stage_list, default=None, help="comma-separated stages (stems or unique prefixes: 01,02_forward); overrides `stages` in the file")
    run.add_argument("--output-root", type=Path, default=Path("runs"), help="parent of the run directory (default: %(default)s)")
    run.add_argument("--overwrite", action="store_true", help="write into a run directory that already holds results")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    prepare = add("prepare", "write the parameterised, unexecuted notebooks for `pytest --nbval-lax --nbval-current-env OUT`")
    prepare.add_argument("--out", type=Path, required=True, help="folder for the notebooks; the notebooks also write their results there")
    prepare.add_argument("--stages", type=_stage_list, default=None, help="comma-separated stages, as for run")
    prepare.add_argument("--overwrite", action="store_true", help="replace notebooks prepared there earlier")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        params = _params.load_params(args.params)
        if args.command == "check":
            stages = _runner.stages_to_run(params, args.stages, args.notebooks)
            files = " <- ".join(str(f) for f in params.files)
            print(f"# {files}: valid\n# stages: {', '.join(stages)}")
            print(params.to_yaml(), end="")
        elif args.command == "run":
            result = _runner.run(
                params,
                output_root=args.output_root,
                stages=args.stages,
                overwrite=args.overwrite,
                notebooks_dir=args.notebooks,
                progress=not args.no_progress,
            )
            print(result.summary())
        elif args.command == "prepare":
            written = _runner.prepare(
                params, args.out, stages=args.stages, overwrite=args.overwrite, notebooks_dir=args.notebooks
            )
            print("\n".join(str(p) for p in written))
    except _runner.StageFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    except (_params.ParamsError, _runner.PipelineError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
