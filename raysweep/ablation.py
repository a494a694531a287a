"""Ablations (paper §5.3, App. D-E) on the sweep machinery: a Ray Tune grid over one config key (x seeds), one
MLflow parent run with a child run per point, every point scored on the validation images and re-scored on the
test images, then a table (mean ± 95 % CI over the seeds, on the test images) and a plot of retain / forget FID
against the key's value, logged on the parent run.

    python experiments/ablate.py --axis unlearn.noise gaussian uniform batch_stats lowrank --seeds 3
    python experiments/ablate_alpha.py        # α grid (Table 3 / App. E)
    python experiments/ablate_noise.py        # noise types incl. low-rank Σ (App. E, App. C.4)
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from raysweep.compare import mean_ci
from raysweep.config import Config, ConfigError

log = logging.getLogger(__name__)

METRICS = ("retain/fid", "forget/fid", "retain/fid_ratio", "forget/fid_ratio", "retain/is", "forget/is")


@dataclass
class Ablation:
    axis: str
    folder: Path
    rows: list[tuple[object, dict[str, tuple[float, float]], int]]  # value, metric -> (mean, ci), seeds
    files: list[Path]
    scored_on: str


def ablation_config(cfg: Config, axis: str, values: list, seeds: int) -> Config:
    """``cfg`` with a grid sweep over ``axis`` (and ``seed`` when ``seeds`` > 1), every point re-scored on test."""
    if not values:
        raise ConfigError(f"--axis {axis}: give at least one value")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1")
    space: dict = {axis: {"grid": list(values)}}
    if seeds > 1:
        space["seed"] = {"grid": list(range(cfg.seed, cfg.seed + seeds))}
    over = {"sweep.space": space, "sweep.num_samples": 1, "sweep.rescore": "all", "sweep.scheduler": "none"}
    return cfg.replace(**over, name=f"{cfg.name}-ablate-{axis.replace('.', '_')}")


def run_ablation(cfg: Config, axis: str, values: list, seeds: int = 1, resume: bool = False) -> Ablation:
    from raysweep.tracking import _client
    from raysweep.tune import run_sweep

    acfg = ablation_config(cfg, axis, values, seeds)
    res = run_sweep(acfg, resume=resume)
    rows = []
    for v in values:
        pts = [p for p in res.points if p.params.get(axis) == v]
        stats = {}
        for m in METRICS:
            key = f"test/{m}" if acfg.sweep.tune_on != "test" else m
            xs = [float(p.extra[key]) for p in pts if key in p.extra]
            if xs:
                stats[m] = mean_ci(xs)
        rows.append((v, stats, len(pts)))
    folder = res.storage
    ab = Ablation(axis, folder, rows, [], "test")
    ab.files = [write_table(ab, folder / "ablation.md", folder / "ablation.csv"), folder / "ablation.csv"]
    ab.files.append(plot(ab, folder / "ablation.png", f"{acfg.name}: {seeds} seed(s), test images"))
    client = _client(res.tracking_uri)
    for f in ab.files:
        client.log_artifact(res.parent_run, str(f))
    return ab


def plot_lines(lines: dict[str, Ablation], path: Path, title: str, x_label: str, x_of=lambda v: v) -> Path:
    """Several ablations over the same axis in one figure: one line per entry (e.g. real / proxy / both retain),
    retain and forget FID ratio in two panels, 95 % CI bars; ``x_of`` maps an axis value to the x coordinate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    for ax, (m, label) in zip(
        axes, (("retain/fid_ratio", "retain FID / original"), ("forget/fid_ratio", "forget FID / original"))
    ):
        for name, ab in lines.items():
            pts = [(x_of(v), s[m]) for v, s, _ in ab.rows if m in s]
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o",
                            capsize=3, label=name)  # fmt: skip
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_table(ab: Ablation, md: Path, csv_path: Path) -> Path:
    cols = [m for m in METRICS if any(m in s for _, s, _ in ab.rows)]
    lines = [f"| {ab.axis} | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for v, stats, n in ab.rows:
        cells = [f"{stats[m][0]:.4g} ± {stats[m][1]:.2g}" if m in stats else "–" for m in cols]
        lines.append(f"| {v} | {n} | " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± 95 % CI half-width (Student's t) over the seeds, scored on the {ab.scored_on} images."]
    md.write_text("\n".join(lines) + "\n")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([ab.axis, "seeds"] + [c for m in cols for c in (m, f"{m}_ci95")])
        for v, stats, n in ab.rows:
            w.writerow([v, n] + [x for m in cols for x in stats.get(m, (float("nan"), float("nan")))])
    return md


def plot(ab: Ablation, path: Path, title: str) -> Path:
    """Retain and forget FID ratio (to the original) against the axis value, with 95 % CI bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _, _ in ab.rows)
    xs = [v if numeric else i for i, (v, _, _) in enumerate(ab.rows)]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for m, label in (("retain/fid_ratio", "retain FID / original"), ("forget/fid_ratio", "forget FID / original")):
        pts = [(x, s[m]) for x, (_, s, _) in zip(xs, ab.rows) if m in s]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o",
                        capsize=3, label=label)  # fmt: skip
    if numeric:
        if all(v > 0 for v, _, _ in ab.rows) and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
    else:
        ax.set_xticks(xs, [str(v) for v, _, _ in ab.rows])
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    from raysweep.frontier import finish_figure

    return finish_figure(fig, ax, path, ab.axis, "FID ratio to the original", title)
