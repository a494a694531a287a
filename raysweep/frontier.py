"""The retain-vs-forget trade-off frontier: the Pareto set of trials (retain FID low, forget FID high), a CSV and
a plot with every trial, the front, the original model's point, and markers by noise type and family."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RETAIN, FORGET = "retain/fid", "forget/fid"


@dataclass(frozen=True)
class Point:
    """One trial: its two objectives and what the plot and the CSV show about it."""

    trial: str
    retain_fid: float
    forget_fid: float
    params: dict = field(default_factory=dict)  # dotted config keys -> values
    extra: dict = field(default_factory=dict)  # other metrics (IS, ratios, extractor)

    @property
    def valid(self) -> bool:
        return all(isinstance(v, (int, float)) and math.isfinite(v) for v in (self.retain_fid, self.forget_fid))


def dominates(a: Point, b: Point) -> bool:
    """a is at least as good in both objectives and strictly better in one (min retain, max forget)."""
    return (
        a.retain_fid <= b.retain_fid
        and a.forget_fid >= b.forget_fid
        and (a.retain_fid < b.retain_fid or a.forget_fid > b.forget_fid)
    )


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """Non-dominated valid points (NaN / inf trials are left out), sorted by retain FID. Exact ties are all kept."""
    pts = [p for p in points if p.valid]
    front = [p for p in pts if not any(dominates(q, p) for q in pts if q is not p)]
    return sorted(front, key=lambda p: (p.retain_fid, -p.forget_fid, p.trial))


def hypervolume(front: Sequence[Point], ref_retain: float, ref_forget: float) -> float:
    """Area dominated by the front w.r.t. a reference point (worst retain FID, worst = lowest forget FID)."""
    pts = sorted(
        (p for p in front if p.valid and p.retain_fid < ref_retain and p.forget_fid > ref_forget),
        key=lambda p: p.retain_fid,
    )
    area, best_forget = 0.0, ref_forget
    for i, p in enumerate(pts):
        best_forget = max(best_forget, p.forget_fid)
        nxt = pts[i + 1].retain_fid if i + 1 < len(pts) else ref_retain
        area += (nxt - p.retain_fid) * (best_forget - ref_forget)
    return area


def write_csv(points: Sequence[Point], path: str | Path) -> Path:
    """All trials, one row each, with an ``on_front`` column."""
    front = {p.trial for p in pareto_front(points)}
    keys = sorted({k for p in points for k in p.params})
    extras = sorted({k for p in points for k in p.extra})
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", RETAIN, FORGET, "on_front", *keys, *extras])
        for p in sorted(points, key=lambda p: p.trial):
            w.writerow(
                [
                    p.trial,
                    p.retain_fid,
                    p.forget_fid,
                    int(p.trial in front),
                    *[p.params.get(k, "") for k in keys],
                    *[p.extra.get(k, "") for k in extras],
                ]
            )
    return path


RETAIN_AXIS, FORGET_AXIS = "retain FID (lower is better)", "forget FID (higher = more forgotten)"


def finish_figure(fig, ax, path: str | Path, xlabel: str, ylabel: str, title: str | None = None) -> Path:
    """Labels, grid and legend on ``ax``; save ``fig`` to ``path`` and close it (every raysweep plot ends here)."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_fronts(studies: dict[str, Sequence[Point]], path: str | Path) -> Path:
    """Several studies (one per family) in one figure: each trial and front as FID ratios to its own original
    (``extra["original/retain/fid"]`` / ``["original/forget/fid"]``), so that families with different FID scales
    share the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for name, points in studies.items():
        pts = [p for p in points if p.valid and "original/retain/fid" in p.extra]
        if not pts:
            continue
        r0, f0 = pts[0].extra["original/retain/fid"], pts[0].extra["original/forget/fid"]
        rel = [Point(p.trial, p.retain_fid / r0, p.forget_fid / f0, p.params, p.extra) for p in pts]
        (line,) = ax.plot([], [])
        colour = line.get_color()
        ax.scatter([p.retain_fid for p in rel], [p.forget_fid for p in rel], color=colour, alpha=0.5, s=18)
        front = pareto_front(rel)
        ax.plot([p.retain_fid for p in front], [p.forget_fid for p in front], "-", color=colour, label=name)
    ax.scatter([1.0], [1.0], marker="*", s=220, color="gold", edgecolor="k", zorder=5, label="each original")
    return finish_figure(fig, ax, path, "retain FID / original's (lower is better)", "forget FID / original's (higher)")


def plot(
    points: Sequence[Point],
    path: str | Path,
    original: tuple[float, float] | None = None,
    title: str = "retain vs forget FID",
) -> Path:
    """Scatter of all trials (marker = noise type, colour = family), the front as a line, the original as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"gaussian": "o", "uniform": "s", "batch_stats": "^"}
    families = sorted({str(p.params.get("model.family", "?")) for p in points})
    colours = dict(zip(families, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    seen = set()
    for p in points:
        if not p.valid:
            continue
        noise, fam = str(p.params.get("unlearn.noise", "?")), str(p.params.get("model.family", "?"))
        label = f"{fam} / {noise}"
        ax.scatter(
            p.retain_fid,
            p.forget_fid,
            marker=markers.get(noise, "x"),
            color=colours.get(fam, "grey"),
            alpha=0.75,
            label=None if label in seen else label,
        )
        seen.add(label)
    front = pareto_front(points)
    if front:
        ax.plot([p.retain_fid for p in front], [p.forget_fid for p in front], "k--", lw=1, label="Pareto front")
    if original:
        ax.scatter(*original, marker="*", s=220, color="gold", edgecolor="k", zorder=5, label="original model")
    return finish_figure(fig, ax, path, RETAIN_AXIS, FORGET_AXIS, title)
