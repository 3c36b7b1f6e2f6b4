"""Command line: ``python -m hybridhydro {check,run,prepare} PARAMS``,
``python -m hybridhydro batch CASES...``, ``python -m hybridhydro study STUDY`` and
``python -m hybridhydro init DIRECTORY`` (the notebooks and parameter files copied there to
adapt), ``python -m hybridhydro outlets FLWDIR --bbox ... --area ...`` (candidate gauge outlets
as ``gauge_attributes.csv``; also the ``hybridhydro`` script).

Exit status: 0 on success, 1 when a stage fails (batch: when a case did not finish), 2 when the
parameters or the request are wrong (nothing ran), 130 when interrupted (Ctrl-C; the message
says how to continue).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .pipeline import batch as _batch
from .pipeline import checks as _checks
from .pipeline import params as _params
from .pipeline import runner as _runner
from .pipeline import study as _study
from . import newbasin as _newbasin
from . import templates as _templates


NOTEBOOKS_HELP = ("folder of the stage notebooks (default: the notebooks/ folder beside the parameter files' folder, "
                  "as `init` writes it, else hybridhydro's own; `check` says which)")


def _stage_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hybridhydro",
        description="Run the hybridhydro notebook pipeline for one case (a parameter file), or a batch of cases.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{check,run,prepare,batch,study,init,outlets}")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("params", type=Path, help="the case's parameter file, e.g. params/cance.yaml")
        sub.add_argument("--notebooks", type=Path, default=None, help=NOTEBOOKS_HELP)
        return sub

    check = add("check", "validate the parameters, print them merged (with a line on each key) and the stages to run")
    check.add_argument("--stages", type=_stage_list, default=None, help="comma-separated stages, as for run")

    run = add("run", "execute the stages in order into <output-root>/<case>/<stage>.ipynb")
    run.add_argument("--stages", type=_stage_list, default=None, help="comma-separated stages (stems or unique prefixes: 01,02_forward); overrides `stages` in the file")
    run.add_argument("--output-root", type=Path, default=Path("runs"), help="parent of the run directory (default: %(default)s)")
    run.add_argument("--overwrite", action="store_true",
                     help="run the chosen stages again in a run directory that already holds results")
    run.add_argument("--resume", action="store_true", help="continue the run in its directory from its first unfinished stage")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    prepare = add("prepare", "write the parameterised, unexecuted notebooks for `pytest --nbval-lax --nbval-current-env OUT`")
    prepare.add_argument("--out", type=Path, required=True, help="folder for the notebooks; the notebooks also write their results there")
    prepare.add_argument("--stages", type=_stage_list, default=None, help="comma-separated stages, as for run")
    prepare.add_argument("--overwrite", action="store_true", help="replace notebooks prepared there earlier")

    about = ("run many cases, each on a Dask worker: parameter files x a grid of --set values x --seeds; "
             "finished cases are skipped when the batch is run again")
    batch = commands.add_parser("batch", help=about, description=about)
    batch.add_argument("cases", nargs="+", type=Path, metavar="CASE", help="parameter files, e.g. params/ci.yaml")
    batch.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2",
        help="a dotted key and its values (YAML), e.g. calibration.optimizers.distributed.maxiter=3,5; "
        "several --set make a grid (every combination)",
    )
    batch.add_argument("--seeds", default=None, metavar="SEEDS", help="values of the top-level `seed` key: 0-4, 0,3,7 or 0-2,10")
    batch.add_argument("--jobs", type=int, default=None,
                       help="workers of the local Dask cluster (default: one per case, at most the CPU count)")
    batch.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="a running Dask scheduler (tcp://host:8786) instead of the local cluster; its workers must see "
                       "the same files at the same paths")
    batch.add_argument("--output-root", type=Path, default=Path("runs"),
                       help="parent of the batch directory (default: %(default)s)")
    batch.add_argument("--name", default=None, help="the batch: it goes to <output-root>/<name> (default: batch-<case>)")
    batch.add_argument("--stages", type=_stage_list, default=None, help="comma-separated stages, as for run")
    batch.add_argument("--notebooks", type=Path, default=None, help=NOTEBOOKS_HELP)
    study = commands.add_parser(
        "study", help="a comparison study: every basin of a study file as a batch (seeds x splits x folds), "
        "then its tables (median [IQR], tiers, acceptance) written into the study's document",
        description="run a study file (e.g. params/studies/comparison.yaml): each basin is one batch; finished "
        "runs are skipped, so the command continues a study that stopped; the tables replace the marked section "
        "of the study's document")
    study.add_argument("study", type=Path, help="the study file, e.g. params/studies/comparison.yaml")
    study.add_argument("--output-root", type=Path, default=Path("runs"), help="parent of the batch directories (default: %(default)s)")
    study.add_argument("--jobs", type=int, default=None, help="workers of the local Dask cluster (default: the CPU count)")
    study.add_argument("--scheduler", default=None, metavar="ADDRESS", help="a running Dask scheduler instead of the local cluster")
    study.add_argument("--tables-only", action="store_true", help="run nothing: write the tables of the runs that finished")
    study.add_argument("--doc", type=Path, default=None, help="write the tables there instead of the study's `doc`")
    study.add_argument("--records", type=Path, default=None, metavar="DIR",
                       help="keep each finished run's records there instead of the study's `records` folder "
                       "(scores, health, parameters, times; the tables are built from them)")
    study.add_argument("--basins", type=_stage_list, default=None, metavar="LABELS",
                       help="run only these basins of the study (comma-separated labels); the tables cover every basin")
    study.add_argument("--seeds", default=None, metavar="SEEDS",
                       help="run only these of the study's seeds now (e.g. 0); the tables cover every run that finished")
    init = commands.add_parser(
        "init", help="copy the stage notebooks and the parameter files into a folder, to adapt them there",
        description="copy notebooks/*.py and params/**/*.yaml into DIRECTORY; a run of DIRECTORY/params/<case>.yaml "
        "then uses DIRECTORY/notebooks. Files already there are not replaced unless --overwrite.")
    init.add_argument("directory", type=Path, help="the working folder (created when missing)")
    init.add_argument("--overwrite", action="store_true", help="replace notebooks and parameter files already there")
    outlets = commands.add_parser(
        "outlets", help="candidate gauge outlets of a D8 raster: cells of a box draining a range of areas (km2), "
        "printed as gauge_attributes.csv", description="print code,x,y,area (km2) of the cells of --bbox whose "
        "drained area lies in --area, largest first (hybridhydro.find_outlets); redirect it to gauge_attributes.csv")
    _newbasin.add_outlets_arguments(outlets)
    return parser


def _init(args: argparse.Namespace) -> int:
    written = _templates.init(args.directory, overwrite=args.overwrite)
    source = _templates.templates()
    root = args.directory.expanduser().resolve()
    print(f"wrote {len(written)} files into {root} (copied from the {source.origin}'s {source.root}):")
    print("\n".join(f"  {path.relative_to(root)}" for path in written))
    first = shlex.quote(str(args.directory / _templates.FIRST_PARAMS))
    print(f"next: adapt {args.directory / 'params'} (base.yaml holds every default) and the notebooks, then run a case:\n"
          f"  python -m hybridhydro check {first}   # validates it and names the notebooks it will use\n"
          f"  python -m hybridhydro run {first}")
    return 0


def _run_batch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    args.notebooks = args.notebooks or _runner.find_notebooks(files=args.cases)[0]
    cases = _batch.expand(args.cases, args.sets, args.seeds, stages=args.stages, notebooks_dir=args.notebooks)
    result = _batch.run_batch(
        cases,
        name=args.name or _batch.default_name(cases),
        output_root=args.output_root,
        jobs=args.jobs,
        scheduler=args.scheduler,
        stages=args.stages,
        notebooks_dir=args.notebooks,
        command=shlex.join(["python", "-m", "hybridhydro", *argv]),
    )
    print(result.summary_md, end="")
    if result.failed:
        print(f"error: {result.message()}", file=sys.stderr)
        return 1
    print(f"all {len(result.cases)} case(s) finished: {result.directory / 'summary.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            return _init(args)
        if args.command == "outlets":
            try:
                return _newbasin.run_outlets(args)
            except (ValueError, FileNotFoundError, ModuleNotFoundError) as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
        if args.command == "batch":
            return _run_batch(args, argv)
        if args.command == "study":
            done = _study.run_study(args.study, output_root=args.output_root, jobs=args.jobs, scheduler=args.scheduler,
                                    tables_only=args.tables_only, doc=args.doc, records=args.records, basins=args.basins,
                                    seeds=args.seeds)
            if done.doc is None:
                print(done.markdown, end="")
            if done.failed:
                print(f"error: {len(done.failed)} run(s) did not finish ({', '.join(done.failed)}); their logs are in "
                      "their run directories; rerun the same command to retry them", file=sys.stderr)
                return 1
            return 0
        params = _params.load_params(args.params)
        if args.command == "check":
            notebooks, why = (args.notebooks, "--notebooks") if args.notebooks else _runner.find_notebooks(params)
            stages = _runner.stages_to_run(params, args.stages, notebooks)
            _runner.check_basin_available(params)  # hydro-smash's data asked for and not installed
            _checks.check_case(params, stages=stages)  # the basin's metadata against the models and the split
            files = " <- ".join(str(f) for f in params.files)
            print(f"# {files}: valid\n# notebooks: {notebooks} ({why})\n# stages: {', '.join(stages)}")
            print(params.to_yaml(), end="")
        elif args.command == "run":
            result = _runner.run(
                params,
                output_root=args.output_root,
                stages=args.stages,
                overwrite=args.overwrite,
                resume=args.resume,
                notebooks_dir=args.notebooks,
                progress=not args.no_progress,
            )
            print(result.summary())
        elif args.command == "prepare":
            written = _runner.prepare(
                params, args.out, stages=args.stages, overwrite=args.overwrite, notebooks_dir=args.notebooks
            )
            print("\n".join(str(p) for p in written))
    except (_runner.RunInterrupted, _batch.BatchInterrupted) as interrupted:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside a stage (the runner records one inside a stage itself)
        hint = {"run": f"; continue with: python -m hybridhydro {shlex.join(argv)} --resume",
                "batch": "; rerun the same command to continue",
                "study": "; rerun the same command to continue (finished and recorded runs are skipped)"}.get(args.command, "")
        hint = hint.replace(" --overwrite", "").replace(" --resume --resume", " --resume")
        print(f"error: interrupted (Ctrl-C){hint}", file=sys.stderr)
        return 130
    except _runner.StageFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    except (_params.ParamsError, _runner.PipelineError, _templates.InitRefused, _templates.TemplatesNotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
