"""Retain-set size ablation (paper App. D, Fig. 6): how many retain images per class unlearning needs, with real
retain images (of the retain classes), with **proxy** retain images (classes in neither list, the paper's
"other classes") added, and with proxy images alone.

The embedded default puts every class in forget or retain, so this ablation uses its own class split of
Fashion-MNIST (raysweep.ablation.RETAIN_SIZE_SPLIT; the original is the same cached one, pretrained on all ten):
forget T-shirt/top, Trouser, Pullover, Dress, Coat (the headline's); retain Sandal, Shirt, Sneaker; proxy Bag,
Ankle boot. For each size n (real retain images per retain class = n / images_per_class as data.retain_ratio) it
runs two grids on the sweep machinery (real only; real + proxy at data.proxy_ratio=1) and one proxy-only point; the
small retain lists are oversampled to the forget set's size (data.oversample, the official rule), so every point
trains equally long. Plot: retain / forget FID ratio against n, one line per kind; a table per kind; both on one
MLflow run whose children are the three grids' parent runs.

    python experiments/ablate_retain_size.py [--sizes 1 10 100 1000] [--seeds 1] [--config mae_fmnist]
        [--smoke-test] [--resume] [key=value ...]
"""

import argparse
import hashlib
import logging
import sys

from raysweep.ablation import plot_lines, retain_size_studies, run_ablation
from raysweep.cli import config_from_args, parse_args, run_script
from raysweep.config import DEFAULT_CONFIG
from raysweep.tracking import umbrella_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config or packaged config name (a 10-class dataset)")
    p.add_argument("--sizes", nargs="+", type=int, default=[1, 10, 100, 1000], help="real retain images per class")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, one seed: checks the ablation in minutes")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parse_args(p)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = config_from_args(args)
    sizes = [min(args.sizes), max(args.sizes)] if args.smoke_test else args.sizes  # smoke: the smallest and largest
    seeds = 1 if args.smoke_test else args.seeds
    studies = retain_size_studies(cfg, sizes)  # every config is built and checked before anything runs
    done = {kind: run_ablation(c, axis, values, seeds, resume=args.resume) for kind, c, axis, values in studies}
    proxy_only = done["proxy retain only"]
    lines = {k: v for k, v in done.items() if k != "proxy retain only"}
    ipc = studies[0][1].data.images_per_class
    # the combined figure and table get a folder of their own, named by the three grids (a smoke test never overwrites
    # a full run's files)
    tag = hashlib.sha256("|".join(str(ab.folder) for ab in done.values()).encode()).hexdigest()[:12]
    folder = proxy_only.folder.parent / f"{cfg.name}-retain-size-{tag}"
    folder.mkdir(exist_ok=True)
    po = proxy_only.rows[0][1]
    fig = plot_lines(
        lines,
        folder / "retain_size.png",
        f"{cfg.name}: retain-set size ({seeds} seed(s), test images); proxy only: forget "
        f"x{po['forget/fid_ratio'][0]:.2f}, retain x{po['retain/fid_ratio'][0]:.2f}",
        "real retain images per retain class",
        x_of=lambda r: max(1, round(r * ipc)),
    )
    table = folder / "retain_size.md"
    table.write_text("".join(f"## {kind}\n\n{ab.files[0].read_text()}\n" for kind, ab in done.items()))
    run = umbrella_run(proxy_only.tracking_uri, cfg.tracking.experiment, [ab.parent_run for ab in done.values()],
                       [fig, table])  # fmt: skip
    print(table.read_text())
    print(f"figure: {fig}; MLflow run {run} (the three grids are its children) in {proxy_only.tracking_uri}")


if __name__ == "__main__":
    sys.exit(run_script(main, "ablate_retain_size"))
