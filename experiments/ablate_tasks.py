"""Task ablation (paper §5, App. D): one unlearned model scored on every image-to-image task — center crops of
1/4 and 1/2, outpainting, extension in the four directions, random 75 % masks — plus a sweep of the center-crop
ratio; a table task x (retain, forget) FID ratio to the original, on the test images (eval.part).

    python experiments/ablate_tasks.py --checkpoint results/runs/<run>/unlearned.pt [--config mae_fmnist]
        [--ratios 0.125 0.25 0.375 0.5 0.625] [key=value ...]

Every task is scored with `raysweep evaluate`'s code (raysweep.evaluate.evaluate_checkpoint) into
<checkpoint folder>/tasks/<task>-<ratio>/ (metrics.json, samples.png); the table and a bar plot go to
tasks/tasks.md, .csv and .png, and to MLflow: one parent run per model and evaluation set (named by the weights'
hash and a digest of the data / eval settings) with a child run per task; a rerun adds no child twice. Scoring one
model needs no Tune grid: the tasks run one after another in this process. --smoke-test scores 50 images per class
and writes into tasks-smoke/ so that it never mixes with a full run's files.
"""

import argparse
import logging
import sys

from raysweep.ablation import plot_tasks, write_task_table
from raysweep.cli import config_from_args, parse_args, run_script
from raysweep.config import DEFAULT_CONFIG
from raysweep.evaluate import evaluate_checkpoint
from raysweep.models.checkpoints import require_file
from raysweep.pretrain import ensure_models
from raysweep.tracking import check_reachable, log_study, tracking_uri

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="the config the checkpoint was unlearned with")
    p.add_argument("--checkpoint", required=True, help="an unlearned.pt (or any saved model of the config's family)")
    p.add_argument("--ratios", nargs="*", type=float, default=[0.125, 0.25, 0.375, 0.5, 0.625], help="center crops")
    p.add_argument("--smoke-test", action="store_true", help="tiny evaluation sets")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parse_args(p)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = config_from_args(args)
    ckpt = require_file(args.checkpoint)
    uri = tracking_uri(cfg)
    check_reachable(uri)  # before any scoring is spent
    tasks = list(dict.fromkeys(TASKS + [("center", r) for r in args.ratios]))
    # The quality gate stops on the task the model was unlearned for (checked here, before any scoring); on the other
    # tasks the original's own quality is part of what the table shows, so their gate reports are logged, not enforced.
    ensure_models(cfg)
    out = ckpt.resolve().parent / ("tasks-smoke" if args.smoke_test else "tasks")
    rows = []
    for i, (name, ratio) in enumerate(tasks, 1):
        logging.info("[%d/%d] task %s %.3g", i, len(tasks), name, ratio)
        c = cfg.replace(**{"eval.task": {"name": name, "ratio": ratio}, "pretrain.quality_gate": False})
        m = evaluate_checkpoint(c, ckpt, out / f"{name}-{ratio:g}")
        rows.append((name, ratio, m))
    caption = f"{cfg.eval.part} images; checkpoint {ckpt}"
    md = write_task_table(rows, out / "tasks.md", out / "tasks.csv", caption)
    fig = plot_tasks(rows, out / "tasks.png", f"{cfg.name}: one model on every task ({cfg.eval.part} images)")
    sha = rows[0][2].get("unlearned_sha256", "")[:12]
    parent = log_study(
        uri,
        cfg.tracking.experiment,
        f"{cfg.name}-tasks-{cfg.digest('data', 'eval')}-{sha}",  # one study per model and evaluation set
        [(f"{n}-{r:g}", {"eval.task.name": n, "eval.task.ratio": r, "checkpoint": str(ckpt)}, m) for n, r, m in rows],
        [md, out / "tasks.csv", fig],
    )
    print(md.read_text())
    print(f"written to {out} (tasks.md, tasks.csv, tasks.png, one folder per task); MLflow run {parent} in {uri}")


if __name__ == "__main__":
    sys.exit(run_script(main, "ablate_tasks"))
