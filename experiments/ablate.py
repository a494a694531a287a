"""An ablation on the sweep machinery: a Ray Tune grid over one config key (x seeds), one MLflow parent run with a
child per point, scored on the validation images and re-scored on the test images; a table (mean ± 95 % CI) and a
plot of the FID ratios against the key, logged on the parent run.

    python experiments/ablate.py --axis unlearn.noise gaussian uniform batch_stats lowrank [--seeds 3]
        [--config mae_fmnist] [--smoke-test] [--resume] [key=value ...]
"""

import argparse
import logging
import sys

import yaml

from raysweep.ablation import run_ablation
from raysweep.cli import config_from_args, parse_args, run_script
from raysweep.config import DEFAULT_CONFIG


def main(default_axis: list[str] | None = None, doc: str = __doc__) -> None:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config or packaged config name")
    p.add_argument("--axis", nargs="+", default=default_axis, required=default_axis is None, metavar="KEY VALUE")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--resume", action="store_true", help="continue an interrupted ablation of the same config")
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, one seed: checks the ablation in minutes")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parse_args(p)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = config_from_args(args)
    key, values = args.axis[0], [yaml.safe_load(v) for v in args.axis[1:]]
    ab = run_ablation(cfg, key, values, 1 if args.smoke_test else args.seeds, resume=args.resume)
    print(ab.files[0].read_text())
    print(f"ablation folder: {ab.folder} (ablation.md, ablation.csv, ablation.png)")


def run(default_axis: list[str] | None, doc: str, prog: str) -> None:
    """The script's entry point: :func:`main` with the ``raysweep`` command's handling of bad input."""
    sys.exit(run_script(lambda: main(default_axis, doc), prog))


if __name__ == "__main__":
    run(None, __doc__, "ablate")
