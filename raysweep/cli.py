"""The ``raysweep`` console script: ``pretrain | unlearn | evaluate | sweep | compare | frontier | ui | bench``.

Every command takes a config path, ``key=value`` dotted overrides and ``--smoke-test``; no hyperparameter has a
flag of its own.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from raysweep.config import DEFAULT_CONFIG, SMOKE_TEST, Config, ConfigError, load_config, packaged_configs

_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")  # a dotted key=value override, e.g. eval.part=val


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` with the ``key=value`` overrides taken out first, wherever they stand: a flag with
    ``nargs="+"`` (``--samplers a b``, ``--methods ...``) would otherwise swallow the overrides after it as its own
    values. They come back, in order, as ``args.overrides`` (the parser's positional of that name)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = [a for a in argv if _OVERRIDE.match(a)]
    args = parser.parse_args([a for a in argv if not _OVERRIDE.match(a)])
    args.overrides = [*overrides, *(getattr(args, "overrides", None) or [])]
    return args


def config_from_args(args: argparse.Namespace, path: str | None = None) -> Config:
    """The config a command line names: ``path`` (default ``args.config``) with ``args.overrides``, at tiny sizes
    under ``args.smoke_test``. Shared by ``raysweep`` and the ``experiments/`` scripts."""
    cfg = load_config(path or args.config, args.overrides)
    if args.smoke_test:
        cfg = cfg.replace(**SMOKE_TEST, smoke_test=True)
    return cfg


def format_table(m: dict) -> str:
    """Original vs unlearned, retain / forget FID and IS, as a fixed-width table."""
    cols = [
        ("retain/fid", "retain FID (lower=better)"),
        ("forget/fid", "forget FID (higher=forgot)"),
        ("retain/is", "retain IS"),
        ("forget/is", "forget IS"),
    ]
    w = max(len(c[1]) for c in cols)
    lines = [f"{'':<11}" + "".join(f"{name:>{w + 2}}" for _, name in cols)]
    for label, prefix in (("original", "original/"), ("unlearned", "")):
        lines.append(f"{label:<11}" + "".join(f"{m[prefix + k]:>{w + 2}.2f}" for k, _ in cols))
    lines.append(f"{'ratio':<11}" + "".join(f"{m[k] / m['original/' + k]:>{w + 1}.2f}x" for k, _ in cols))
    lines.append(
        f"extractor: {m.get('extractor')}   task: {m.get('task')}   generation: {m.get('generation')}   "
        f"images per group: {m.get('eval_images_per_group')}"
    )
    return "\n".join(lines)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from raysweep.pretrain import ensure_models
    from raysweep.quality import summary

    cfg = config_from_args(args)
    models = ensure_models(cfg)
    orig = models.original
    print(f"original model: {orig or cfg.model.checkpoint}\nin-domain extractor: {models.extractor}")
    if models.quality is not None:
        print(f"quality gate ({'passed' if models.quality['passed'] else 'FAILED'}): {summary(models.quality)}")
    if orig is not None:
        print(f"completions of held-out images (input | masked | completion): {orig.with_suffix('.png')}")
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    from raysweep.runner import unlearn

    cfg = config_from_args(args)
    run_dir, metrics = unlearn(cfg)
    print(format_table(metrics))
    print(f"run folder: {run_dir} (metrics.json, samples.png, unlearned.pt)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raysweep.evaluate import evaluate_checkpoint
    from raysweep.models.checkpoints import require_file

    cfg = config_from_args(args)
    require_file(args.checkpoint)
    out = (
        Path(args.out)
        if args.out
        else Path(args.checkpoint).resolve().parent
        / (f"eval-{cfg.eval.part}-{cfg.eval.task.name}-{cfg.eval.task.ratio}")
    )
    metrics = evaluate_checkpoint(cfg, args.checkpoint, out)
    print(format_table(metrics))
    print(f"scored on the {cfg.eval.part} images; written to {out} (metrics.json, samples.png)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from raysweep.tune import run_sweep

    res = run_sweep(config_from_args(args), resume=args.resume)
    print(f"{res.name}: {len(res.points)} trials, {len(res.front)} on the front; plot {res.files[1]}")
    return 0


def cmd_frontier(args: argparse.Namespace) -> int:
    """Rebuild the frontier CSV and plot of a sweep from its MLflow runs."""
    from pathlib import Path

    from raysweep.frontier import Point, plot, write_csv
    from raysweep.paths import results_dir
    from raysweep.tracking import child_runs, tracking_uri

    cfg = config_from_args(args)
    sweep = Path(args.sweep).name if args.sweep else None
    uri = tracking_uri(cfg)
    _, runs = child_runs(uri, args.experiment or cfg.tracking.experiment, sweep)
    pts = [
        Point(
            r["trial"],
            r["metrics"]["retain/fid"],
            r["metrics"]["forget/fid"],
            {
                k: v
                for k, v in r["params"].items()
                if k in ("unlearn.noise", "model.family")
                or k.startswith(("unlearn.alpha", "unlearn.lr", "unlearn.epochs"))
            },
            {k: v for k, v in r["metrics"].items() if k.startswith("original/")},
        )
        for r in runs
        if "retain/fid" in r["metrics"] and "forget/fid" in r["metrics"]
    ]
    if not pts:
        print("raysweep: the sweep has no finished trial with retain/fid and forget/fid", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else results_dir(cfg.tracking.results_dir) / "frontier"
    out.mkdir(parents=True, exist_ok=True)
    orig = (
        (pts[0].extra["original/retain/fid"], pts[0].extra["original/forget/fid"])
        if "original/retain/fid" in pts[0].extra
        else None
    )
    csv_path, png = write_csv(pts, out / "frontier.csv"), plot(pts, out / "frontier.png", original=orig)
    print(f"{len(pts)} trials -> {csv_path}, {png}")
    return 0


def cmd_relog(args: argparse.Namespace) -> int:
    """Log a sweep folder's finished trials into MLflow (e.g. after the tracking server was down)."""
    from pathlib import Path

    from raysweep.tracking import check_reachable, relog, tracking_uri

    cfg = config_from_args(args)
    folder = Path(args.sweep)
    if not folder.is_dir():
        raise ConfigError(f"--sweep {args.sweep!r} is not a folder; give a sweep folder (results/sweeps/<name>)")
    uri = tracking_uri(cfg)
    check_reachable(uri)
    parent, logged, skipped = relog(folder, uri, args.experiment or cfg.tracking.experiment)
    print(f"{folder.name}: {logged} trial(s) logged, {skipped} already in MLflow (parent run {parent}, store {uri})")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from raysweep.tracking import serve_ui, tracking_uri

    return serve_ui(tracking_uri(config_from_args(args)), host=args.host, port=args.port)


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmarks live in the source checkout's ``benchmarks/`` (not in the installed package)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "throughput.py").is_file():
        print(
            f"raysweep: {root / 'benchmarks'} not found; `raysweep bench` runs from a source checkout "
            "(pip install -e .)",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(root))  # spawned benchmark workers inherit sys.path
    if args.device == "cuda":  # paper-scale models on one GPU, fp32 vs bf16 (benchmarks/gpu.py)
        from benchmarks.gpu import main as gpu_main

        return gpu_main(["--steps", str(args.steps or 20)])
    from benchmarks.throughput import main as bench_main

    return bench_main(config_from_args(args), steps=args.steps or 60)


def cmd_compare(args: argparse.Namespace) -> int:
    from raysweep.compare import run_comparison

    cfg = config_from_args(args)
    res = run_comparison(cfg, args.methods, args.seeds)
    print(res.files[0].read_text())
    print(f"comparison folder: {res.folder} (table.md, table.csv, table-seeds.csv, samples.png, frontier.png)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raysweep", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (
        ("pretrain", cmd_pretrain, "train and cache the original model and the extractor"),
        ("unlearn", cmd_unlearn, "unlearn the forget classes and print the trade-off"),
        ("evaluate", cmd_evaluate, "score a saved model against the original (eval.part=test|val, eval.task)"),
        ("sweep", cmd_sweep, "Ray Tune + Optuna search of the YAML sweep block, MLflow runs"),
        ("compare", cmd_compare, "Table 1: the original, the four App. C.6 baselines and ours, over seeds"),
        ("frontier", cmd_frontier, "rebuild a sweep's frontier CSV and plot from MLflow"),
        ("relog", cmd_relog, "log a sweep folder's finished trials into MLflow (after the store was down)"),
        ("ui", cmd_ui, "MLflow UI on the sweep store (127.0.0.1 unless --host)"),
        ("bench", cmd_bench, "throughput of the unlearning step: plain PyTorch vs Ray Train, or --device cuda"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument(
            "--config",
            default=DEFAULT_CONFIG,
            help=f"YAML config path or packaged config name {packaged_configs()} (default: {DEFAULT_CONFIG}, "
            "the embedded default)",
        )
        s.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. unlearn.alpha=0.5")
        s.add_argument("--smoke-test", action="store_true", help="tiny sizes: checks the pipeline in minutes")
        if name in SUPERVISED_COMMANDS:
            s.add_argument(
                "--ray-restarts",
                type=int,
                default=1,
                help="start Ray again and resume this many times if its local cluster dies under the run "
                "(default 1; 0: run in this process)",
            )
        if name == "evaluate":
            s.add_argument("--checkpoint", required=True, help="the saved model, e.g. a run's unlearned.pt")
            s.add_argument("--out", help="output folder (default: next to the checkpoint)")
        if name == "bench":
            s.add_argument("--steps", type=int, help="timed steps per runtime / variant (default 60 CPU, 20 CUDA)")
            s.add_argument(
                "--device",
                choices=["cpu", "cuda"],
                default="cpu",
                help="cpu: plain PyTorch vs Ray Train on the config's job; cuda: MAE ViT-B/16 and Palette's UNet at "
                "paper scale, fp32 vs bf16 (benchmarks/gpu.py)",
            )
        if name == "sweep":
            s.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
        if name == "compare":
            s.add_argument(
                "--methods", nargs="+", help="default: max_loss noisy_label retain_label random_encoder ours"
            )
            s.add_argument("--seeds", type=int, default=3, help="runs per method (seed, seed+1, ...)")
        if name == "frontier":
            s.add_argument("--sweep", help="sweep name or folder (default: the newest sweep)")
            s.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment)")
            s.add_argument("--out", help="output folder (default: <results>/frontier)")
        if name == "relog":
            s.add_argument("--sweep", required=True, help="the sweep folder, results/sweeps/<name>")
            s.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment)")
        if name == "ui":
            s.add_argument("--host", default="127.0.0.1")
            s.add_argument("--port", type=int, default=5000)
        s.set_defaults(fn=fn)
    return p


SUPERVISED_COMMANDS = ("pretrain", "unlearn", "sweep")  # the ones that start a local Ray cluster


def entry() -> int:
    """The ``raysweep`` console script: :func:`main`, with the Ray commands run under :mod:`raysweep.supervise`."""
    return main(supervise=True)


def main(argv: list[str] | None = None, supervise: bool = False) -> int:
    """``raysweep <command>``. With ``supervise`` (the console script), ``pretrain`` / ``unlearn`` / ``sweep`` on the
    Ray runtime run in a child process that is started again if Ray's local cluster dies under it."""
    from raysweep import supervise as sv

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(build_parser(), argv)

    def body() -> int:
        if (
            supervise
            and args.command in SUPERVISED_COMMANDS
            and args.ray_restarts > 0
            and not sv.supervised()
            and config_from_args(args).resources.runtime == "ray"  # a bad config is refused here, before any child
        ):
            resume = "--resume" if args.command == "sweep" else None
            return sv.run_supervised([sys.executable, "-m", "raysweep.cli", *argv], args.ray_restarts, resume)
        return args.fn(args)

    return run_script(body, "raysweep")


def report_bad_input(e: BaseException, prog: str = "raysweep") -> int | None:
    """Bad input found by the config and preflight checks (config keys and values, dataset, classes, splits,
    checkpoints, the quality gate): one line on stderr naming it, and exit status 2. ``None`` for anything else,
    which is a fault, not bad input: let its traceback show."""
    from raysweep.data.datasets import DatasetNotFoundError
    from raysweep.data.splits import EmptySplitError
    from raysweep.models.checkpoints import CheckpointError
    from raysweep.quality import OriginalQualityError

    if isinstance(e, ConfigError):
        print(f"{prog}: config error: {e}", file=sys.stderr)
        return 2
    named = (DatasetNotFoundError, EmptySplitError, CheckpointError, OriginalQualityError)
    if isinstance(e, named) or type(e) is ValueError:  # a bare ValueError: the checks' class and split messages
        print(f"{prog}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return None


def run_script(body, prog: str) -> int:
    """A command's or an ``experiments/`` script's body, run with the handling of bad input
    (:func:`report_bad_input`): ``sys.exit(run_script(main, "tune_alpha"))``. In a supervised child
    (:mod:`raysweep.supervise`) its exit status also tells the supervisor whether Ray died under it."""
    from raysweep import supervise as sv

    def answered() -> int:
        try:
            return body() or 0
        except Exception as e:
            code = report_bad_input(e, prog)
            if code is None:
                raise
            return code

    return sv.run_child(answered) if sv.supervised() else answered()


if __name__ == "__main__":
    sys.exit(entry())
