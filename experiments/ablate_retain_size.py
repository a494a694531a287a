"""Retain-set size ablation (paper App. D, Fig. 6): how many retain images per class unlearning needs, with real
retain images (of the retain classes), with **proxy** retain images (classes in neither list, the paper's
"other classes") added, and with proxy images alone.

The embedded default puts every class in forget or retain, so this ablation uses its own class split (3 forget,
3 retain, 4 proxy classes of Fashion-MNIST; the original is the same cached one, pretrained on all ten):
forget T-shirt/top, Trouser, Pullover; retain Dress, Coat, Sandal; proxy Shirt, Sneaker, Bag, Ankle boot.
For each size n (real retain images per retain class = ceil(images_per_class x data.retain_ratio)) it runs two
grids on the sweep machinery (real only; real + proxy at data.proxy_ratio=1) and one proxy-only point; the small
retain lists are oversampled to the forget set's size (data.oversample, the official rule), so every point
trains equally long. Plot: retain / forget FID ratio against n, one line per kind; table per kind.

    python experiments/ablate_retain_size.py [--sizes 1 10 100 1000] [--seeds 1] [--config mae_fmnist]
        [--smoke-test] [--resume] [key=value ...]
"""

import argparse
import logging

from raysweep.ablation import plot_lines, run_ablation
from raysweep.config import DEFAULT_CONFIG, SMOKE_TEST, load_config

SPLIT = {"data.forget_classes": [0, 1, 2], "data.retain_classes": [3, 4, 5]}

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config or packaged config name (a 10-class dataset)")
p.add_argument("--sizes", nargs="+", type=int, default=[1, 10, 100, 1000], help="real retain images per class")
p.add_argument("--seeds", type=int, default=1)
p.add_argument("--resume", action="store_true")
p.add_argument("--smoke-test", action="store_true", help="tiny sizes, one seed: checks the ablation in minutes")
p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
args = p.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
cfg = load_config(args.config, args.overrides).replace(**SPLIT)
if args.smoke_test:
    cfg = cfg.replace(**SMOKE_TEST, smoke_test=True)
seeds = 1 if args.smoke_test else args.seeds
ipc = cfg.data.images_per_class
sizes = sorted({min(n, ipc) for n in args.sizes})
if args.smoke_test:  # the smallest and the largest size only
    sizes = sorted({sizes[0], sizes[-1]})
ratios = [n / ipc for n in sizes]
lines = {}
for kind, proxy in (("real retain", 0.0), ("real + proxy retain", 1.0)):
    c = cfg.replace(**{"data.proxy_ratio": proxy}, name=f"{cfg.name}-retain{'+proxy' if proxy else ''}")
    lines[kind] = run_ablation(c, "data.retain_ratio", ratios, seeds, resume=args.resume)
c = cfg.replace(**{"data.proxy_ratio": 1.0, "data.retain_ratio": 0.0}, name=f"{cfg.name}-proxy-only")
proxy_only = run_ablation(c, "data.proxy_ratio", [1.0], seeds, resume=args.resume)
folder = lines["real retain"].folder.parent
fig = plot_lines(
    lines,
    folder / "retain_size.png",
    f"{cfg.name}: retain-set size ({seeds} seed(s), test images); proxy only: forget "
    f"x{proxy_only.rows[0][1]['forget/fid_ratio'][0]:.2f}, retain x{proxy_only.rows[0][1]['retain/fid_ratio'][0]:.2f}",
    "real retain images per retain class",
    x_of=lambda r: max(1, round(r * ipc)),
)
for kind, ab in {**lines, "proxy retain only": proxy_only}.items():
    print(f"## {kind}\n{ab.files[0].read_text()}")
print(f"figure: {fig}")
