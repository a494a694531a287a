"""Search alpha, learning rate, epochs and noise type (Ray Tune + Optuna, multi-objective: retain FID down, forget
FID up); every trial is an MLflow child run, the trade-off frontier is a plot and a CSV on the parent run.

    python experiments/tune_alpha.py [--config PATH ...] [key=value ...] [--smoke-test] [--resume]

--config once per model family (a YAML path or a packaged config's name), e.g. --config mae_fmnist
--config mage_fmnist (one study per family); --families mae,mage,palette is the same for the packaged configs.
With several studies, one umbrella MLflow run holds the studies' parent runs and a figure with every family's
front, each against its own original (FID ratios).
"""

import argparse
import logging
import sys

from raysweep.cli import config_from_args, parse_args, run_script
from raysweep.config import DEFAULT_CONFIG
from raysweep.supervise import run_supervised, supervised
from raysweep.tune import run_sweep


def report(res, cfg) -> None:
    """One study's front (and its re-scoring on the test images), errors and the time breakdown."""
    o = res.points[0].extra if res.points else {}
    print(
        f"\n{res.name}: {len(res.points)} trials, {len(res.front)} on the front (scored on the {cfg.sweep.tune_on} "
        "images); original model: retain FID "
        f"{o.get('original/retain/fid', float('nan')):.2f}, forget FID {o.get('original/forget/fid', float('nan')):.2f}"
    )
    for q in res.front:
        print(
            f"  {q.trial}: retain FID {q.retain_fid:.2f} (x{q.retain_fid / o['original/retain/fid']:.2f})  forget FID "
            f"{q.forget_fid:.2f} (x{q.forget_fid / o['original/forget/fid']:.2f})  {q.params}"
        )
        if "test/forget/fid_ratio" in q.extra:  # the front re-scored on the test images (reported, not tuned on)
            print(
                f"      on the test images: retain FID x{q.extra['test/retain/fid_ratio']:.2f}  "
                f"forget FID x{q.extra['test/forget/fid_ratio']:.2f}"
            )
    for trial, why in res.errors.items():
        print(f"  errored: {trial}: {why}")
    if res.tracking_error:
        print(f"MLflow failed ({res.tracking_error}); log the results later: raysweep relog --sweep {res.storage}")
    t = res.seconds
    print(
        f"time (s): pretraining {t['pretrain']:.0f}, extractor {t['extractor']:.0f}, quality gate "
        f"{t['quality_gate']:.0f}, {t['n_trials']:.0f} trials {t['trials']:.0f} (per trial: start-up "
        f"{t.get('trial_startup', float('nan')):.0f}, unlearning {t.get('trial_train', float('nan')):.0f}, "
        f"evaluation {t.get('trial_evaluate', float('nan')):.0f}), re-scoring on test {t['rescore_test']:.0f}"
    )
    print(f"frontier plot: {res.files[1]}\nfrontier CSV:  {res.files[0]}")
    print(f"MLflow UI:     mlflow ui --backend-store-uri {res.tracking_uri} --host 127.0.0.1   (or: raysweep ui)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        action="append",
        help="YAML config or packaged config name, once per model family "
        f"(default: {DEFAULT_CONFIG}, the embedded default)",
    )
    p.add_argument("--families", help="comma-separated families of the packaged configs, e.g. mae,mage,palette")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. sweep.num_samples=16")
    p.add_argument("--smoke-test", action="store_true", help="2 tiny trials: checks the whole sweep in minutes")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same config")
    p.add_argument(
        "--ray-restarts",
        type=int,
        default=1,
        help="if Ray's local cluster dies under the sweep, start it again with --resume this many times (default 1)",
    )
    args = parse_args(p)
    configs = list(args.config or [])
    if args.families:
        configs += [f"{f.strip()}_fmnist" for f in args.families.split(",") if f.strip()]
    cfgs = [config_from_args(args, path) for path in configs or [DEFAULT_CONFIG]]  # all checked before any study
    if args.ray_restarts > 0 and not supervised():  # the sweep runs in a child that is restarted if Ray dies under it
        return run_supervised([sys.executable, __file__, *sys.argv[1:]], args.ray_restarts, "--resume")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    results = []
    for cfg in cfgs:  # one study per family
        results.append(run_sweep(cfg, resume=args.resume))
        report(results[-1], cfg)
    if len(results) > 1:  # the studies side by side: one figure, one umbrella run
        from raysweep.frontier import plot_fronts
        from raysweep.tracking import umbrella_run

        fig = plot_fronts({r.name: r.points for r in results}, results[0].storage.parent / "fronts.png")
        run = umbrella_run(results[0].tracking_uri, cfg.tracking.experiment, [r.parent_run for r in results], [fig])
        print(f"all fronts: {fig} (MLflow run {run}, parent of the {len(results)} studies)")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main, "tune_alpha"))
