"""The paper's Table 1 on one family: the original, the four App. C.6 baselines (max_loss, noisy_label,
retain_label, random_encoder) and ours, each unlearned from the same original through the same Ray Train path,
over seeds, under one MLflow parent run; writes table.md / table.csv (and table-seeds.csv, each run's own
figures), samples.png and frontier.png.

    python experiments/compare_baselines.py [--config PATH ...] [--seeds 3] [--methods ...] [--smoke-test]
        [key=value ...]

--config once per model family (a YAML path or a packaged config's name), e.g. --config mae_fmnist
--config palette_fmnist. Same as `raysweep compare`.
"""

import argparse
import logging
import sys

from raysweep.cli import config_from_args, parse_args, run_script
from raysweep.compare import METHOD_ORDER, run_comparison
from raysweep.config import DEFAULT_CONFIG


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", help=f"YAML config or packaged config name (default: {DEFAULT_CONFIG})")
    p.add_argument("--methods", nargs="+", default=list(METHOD_ORDER))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. unlearn.alpha=0.5")
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, one seed: checks the comparison in minutes")
    args = parse_args(p)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfgs = [config_from_args(args, path) for path in args.config or [DEFAULT_CONFIG]]  # all checked first
    for cfg in cfgs:
        res = run_comparison(cfg, args.methods, 1 if args.smoke_test else args.seeds)
        print(res.files[0].read_text())
        print(f"comparison folder: {res.folder}")


if __name__ == "__main__":
    sys.exit(run_script(main, "compare_baselines"))
