"""Task ablation (paper §5, App. D): one unlearned model scored on every image-to-image task — center crops of
1/4 and 1/2, outpainting, extension in the four directions, random 75 % masks — plus a sweep of the center-crop
ratio; a table task x (retain, forget) FID ratio to the original, on the test images (eval.part).

    python experiments/ablate_tasks.py --checkpoint results/runs/<run>/unlearned.pt [--config mae_fmnist]
        [--ratios 0.125 0.25 0.375 0.5 0.625] [key=value ...]

Every task is scored with `raysweep evaluate`'s code (raysweep.evaluate.evaluate_checkpoint) into
<checkpoint folder>/tasks/<task>-<ratio>/ (metrics.json, samples.png); the table goes to tasks/tasks.md and .csv.
"""

import argparse
import csv
import logging
from pathlib import Path

from raysweep.config import DEFAULT_CONFIG, SMOKE_TEST, load_config
from raysweep.evaluate import evaluate_checkpoint
from raysweep.models.checkpoints import CheckpointError

TASKS = [
    ("center", 0.25),
    ("center", 0.5),
    ("outpaint", 0.5),
    ("extend_up", 0.5),
    ("extend_down", 0.5),
    ("extend_left", 0.5),
    ("extend_right", 0.5),
    ("random", 0.75),
]

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--config", default=DEFAULT_CONFIG, help="the config the checkpoint was unlearned with")
p.add_argument("--checkpoint", required=True, help="an unlearned.pt (or any saved model of the config's family)")
p.add_argument("--ratios", nargs="*", type=float, default=[0.125, 0.25, 0.375, 0.5, 0.625], help="center crops")
p.add_argument("--smoke-test", action="store_true", help="tiny evaluation sets")
p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
args = p.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
cfg = load_config(args.config, args.overrides)
if args.smoke_test:
    cfg = cfg.replace(**SMOKE_TEST, smoke_test=True)
ckpt = Path(args.checkpoint)
if not ckpt.is_file():
    raise SystemExit(f"ablate_tasks: {CheckpointError.__name__}: --checkpoint {str(ckpt)!r} is not a file")
tasks = list(dict.fromkeys(TASKS + [("center", r) for r in args.ratios]))
out = ckpt.resolve().parent / "tasks"
rows = []
for i, (name, ratio) in enumerate(tasks, 1):
    logging.info("[%d/%d] task %s %.3g", i, len(tasks), name, ratio)
    c = cfg.replace(**{"eval.task": {"name": name, "ratio": ratio}})
    m = evaluate_checkpoint(c, ckpt, out / f"{name}-{ratio:g}")
    rows.append((name, ratio, m))
cols = [
    "retain/fid_ratio",
    "forget/fid_ratio",
    "retain/fid",
    "forget/fid",
    "original/retain/fid",
    "original/forget/fid",
]
lines = ["| task | ratio | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
for name, ratio, m in rows:
    lines.append(f"| {name} | {ratio:g} | " + " | ".join(f"{m[k]:.3f}" for k in cols) + " |")
lines += ["", f"{cfg.eval.part} images; checkpoint {ckpt}"]
(out / "tasks.md").write_text("\n".join(lines) + "\n")
with open(out / "tasks.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["task", "ratio", *cols])
    for name, ratio, m in rows:
        w.writerow([name, ratio, *(m[k] for k in cols)])
print("\n".join(lines))
print(f"written to {out} (tasks.md, tasks.csv, one folder per task)")
