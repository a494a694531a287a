"""The paper's Table 1 for one family: the original model, the four App. C.6 baselines and ours (Eq. 10), each
unlearned from the same original through the same Ray Train path (:func:`raysweep.runner.unlearn`), scored on
the same images, over several seeds.

One MLflow parent run (tag ``raysweep.compare``) holds one child run per method x seed; the comparison folder
``<results>/compare/<name>-<digest>/`` gets ``table.md`` / ``table.csv`` (mean and 95 % confidence half-width per
column, Student's t over the seeds; below the verdict, each method's paired-by-seed differences from ours),
``table-seeds.csv`` (every run's own figures, to pool seeds of separate comparisons), ``samples.png`` (ground
truth, masked input, the original's completions, then one row per method: its completions of the same retain and
forget images) and ``frontier.png`` (every method's mean retain vs forget FID with its intervals, and the
original). Finished runs are reused, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from raysweep.config import Config, ConfigError, flatten
from raysweep.evaluate import GRID_COLUMNS, GRID_FILE, GRID_PAD, METRICS_FILE
from raysweep.unlearn.losses import METHODS

log = logging.getLogger(__name__)

METHOD_ORDER = ("max_loss", "noisy_label", "retain_label", "random_encoder", "ours")  # the paper's row order
COLUMNS = (
    ("retain/fid", "retain FID ↓"),
    ("forget/fid", "forget FID ↑"),
    ("retain/fid_ratio", "retain ×"),
    ("forget/fid_ratio", "forget ×"),
    ("retain/is", "retain IS"),
    ("forget/is", "forget IS"),
    ("retain/indomain_cos", "retain cos ↑"),
    ("forget/indomain_cos", "forget cos ↓"),
)
COMPARE_TAG = "raysweep.compare"


def fmt_ci(mean: float, half: float, n: int) -> str:
    """A table cell: ``mean ± half-width``, the mean alone when one value gives no interval."""
    return f"{mean:.4g} ± {half:.2g}" if n > 1 else f"{mean:.4g}"


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its ``level`` confidence interval (Student's t; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


@dataclass
class Comparison:
    folder: Path
    runs: dict[str, list[dict]] = field(default_factory=dict)  # method -> metrics of each seed
    original: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _finished(cfg: Config) -> tuple[Path, dict] | None:
    """A finished run of exactly this config (the runner's first folder for it), reused instead of repeated."""
    from raysweep.runner import run_stem

    d = run_stem(cfg)
    return (d, json.loads((d / METRICS_FILE).read_text())) if (d / METRICS_FILE).is_file() else None


def run_comparison(cfg: Config, methods: list[str] | None = None, seeds: int = 3) -> Comparison:
    """Unlearn with every method and seed (``seed`` = cfg.seed + 0..seeds-1) and write the table and figures."""
    from raysweep.pretrain import ensure_models
    from raysweep.runner import preflight, unlearn
    from raysweep.tracking import check_reachable, tracking_uri

    methods = list(methods or METHOD_ORDER)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ConfigError(f"unknown method(s) {bad}; valid: {sorted(METHODS)}")
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise ConfigError(
            f"--methods lists {twice} more than once; name each method once (--seeds sets the runs per method)"
        )
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1")
    preflight(cfg)  # bad input fails before any compute
    uri = tracking_uri(cfg)
    check_reachable(uri)
    ensure_models(cfg)  # once, before the first method: every run starts from this original
    from raysweep.paths import results_dir

    name = f"compare-{cfg.name}-{cfg.digest('model', 'data', 'pretrain', 'unlearn', 'eval', 'seed')}-s{seeds}"
    folder = results_dir(cfg.tracking.results_dir) / "compare" / name
    folder.mkdir(parents=True, exist_ok=True)
    parent = _parent_run(uri, cfg, name, methods, seeds)
    res = Comparison(folder)
    total, k = len(methods) * seeds, 0
    for method in methods:
        for s in range(seeds):
            k += 1
            run_cfg = cfg.replace(**{"unlearn.method": method, "seed": cfg.seed + s})
            done = _finished(run_cfg)
            if done:
                run_dir, metrics = done
                log.info("[%d/%d] %s seed %d: finished earlier, reused (%s)", k, total, method, run_cfg.seed, run_dir)
            else:
                log.info("[%d/%d] %s seed %d: unlearning", k, total, method, run_cfg.seed)
                run_dir, metrics = unlearn(run_cfg)
            res.runs.setdefault(method, []).append({**metrics, "run_dir": str(run_dir), "seed": run_cfg.seed})
            _child_run(uri, cfg, parent, method, run_cfg.seed, run_dir, metrics)
    first = next(iter(res.runs.values()))[0]
    res.original = {k: float(first[f"original/{k}"]) for k, _ in COLUMNS if f"original/{k}" in first}
    res.files = [
        write_table(res, folder / "table.md", folder / "table.csv"),
        folder / "table.csv",
        seeds_csv(folder / "table.csv"),
        samples_figure(res, folder / GRID_FILE),
        frontier_figure(res, folder / "frontier.png", f"{cfg.name}: {seeds} seed(s)"),
    ]
    _log_files(uri, parent, res.files)
    return res


def _rows(res: Comparison) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    original = {k: (v, 0.0) for k, v in res.original.items()}
    original.update({k: (1.0, 0.0) for k in ("retain/fid_ratio", "forget/fid_ratio")})  # x is unlearned / original
    rows = [("original", original)]
    for method, runs in res.runs.items():
        rows.append((method, {k: mean_ci([float(r[k]) for r in runs]) for k, _ in COLUMNS if k in runs[0]}))
    return rows


def dominates(a: dict[str, tuple[float, float]], b: dict[str, tuple[float, float]]) -> bool:
    """Row ``a`` dominates row ``b`` beyond the confidence intervals: a's retain FID interval lies wholly below b's
    and a's forget FID interval wholly above b's (each value a ``(mean, 95 % half-width)`` pair; with one seed the
    half-widths are 0 and this is plain Pareto dominance). The paper's claim for Eq. 10 (Tables 1-2) is that no
    baseline dominates it: it keeps retain quality where the others lose it, or forgets where they do not."""
    (ar, arh), (af, afh) = a["retain/fid"], a["forget/fid"]
    (br, brh), (bf, bfh) = b["retain/fid"], b["forget/fid"]
    return ar + arh < br - brh and af - afh > bf + bfh


def dominated_by(res: Comparison) -> dict[str, list[str]]:
    """For every unlearning method, the other methods that dominate it beyond the intervals (:func:`dominates`);
    the original is not a competitor (it forgets nothing)."""
    rows = dict(_rows(res)[1:])
    return {m: [o for o in rows if o != m and dominates(rows[o], rows[m])] for m in rows}


def paired_differences(a: list[dict], b: list[dict]) -> tuple[int, tuple[float, float], tuple[float, float]] | None:
    """Over the seeds both methods ran, the per-seed differences a − b of retain and forget FID: (shared seeds,
    (retain mean, 95 % half-width), (forget mean, half-width)); None below two shared seeds (no interval)."""
    by_seed = {r["seed"]: r for r in b}
    pairs = [(r, by_seed[r["seed"]]) for r in a if r["seed"] in by_seed]
    if len(pairs) < 2:
        return None
    dr = mean_ci([float(x["retain/fid"]) - float(y["retain/fid"]) for x, y in pairs])
    df = mean_ci([float(x["forget/fid"]) - float(y["forget/fid"]) for x, y in pairs])
    return len(pairs), dr, df


def paired_dominates(a: list[dict], b: list[dict]) -> bool:
    """Method ``a`` dominates ``b`` paired by seed: over the seeds both ran, the 95 % interval (Student's t) of the
    per-seed differences a − b lies wholly below 0 for retain FID and wholly above 0 for forget FID. Runs of one
    seed share its data order and random stream, the original and the scored images, so the differences carry
    less noise than two independent intervals (:func:`dominates`), and a consistent gap shows at fewer seeds. Needs
    at least two shared seeds."""
    diff = paired_differences(a, b)
    if diff is None:
        return False
    _, (dr, drh), (df, dfh) = diff
    return dr + drh < 0 and df - dfh > 0


def _verdict(rows: dict[str, dict], beaten_by: list[str], seeds: int, paired: list[str] | None = None) -> str:
    """Ours' place: dominated beyond the intervals; dominated paired by seed (:func:`paired_dominates`) where the
    independent intervals overlap; on the front; or undecided: no row dominates ours beyond either kind of
    interval but one does by its means (few seeds: with two, Student's t is 12.7 and the intervals are too wide to
    separate anything, which is no evidence that ours is on the front)."""
    if beaten_by:
        return f"Ours is dominated by {', '.join(beaten_by)}."
    if paired:
        return (
            f"Ours is dominated by {', '.join(paired)} paired by seed: the 95 % interval of the per-seed differences "
            "is below 0 for retain FID and above 0 for forget FID (the independent intervals overlap)."
        )
    means = {m: {k: (v[0], 0.0) for k, v in row.items()} for m, row in rows.items()}
    by_means = [m for m in means if m != "ours" and dominates(means[m], means["ours"])]
    if not by_means:
        return "Ours is on the front."
    return (
        f"Undecided: nothing dominates ours beyond the intervals, but {', '.join(by_means)} "
        f"{'has' if len(by_means) == 1 else 'have'} a lower mean retain "
        f"FID and a higher mean forget FID over {seeds} seed(s); more seeds narrow the intervals."
    )


def write_table(res: Comparison, md: Path, csv_path: Path) -> Path:
    """Markdown (mean ± 95 % CI half-width) and CSV (mean and half-width columns) of every method, and beside the CSV
    every run's own figures (:func:`write_seeds_csv`)."""
    rows = _rows(res)
    seeds = max(len(r) for r in res.runs.values())
    cols = [(k, label) for k, label in COLUMNS if any(k in v for _, v in rows)]
    beaten = dominated_by(res)
    lines = [
        f"| method (paper section) | {' | '.join(label for _, label in cols)} | dominated by |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for method, vals in rows:
        sec = METHODS[method].section if method in METHODS else "before unlearning"
        cells = []
        for k, _ in cols:
            if k not in vals:
                cells.append("–")
                continue
            m, h = vals[k]
            cells.append(fmt_ci(m, h, len(res.runs.get(method, [])) if method != "original" else 1))
        by = ", ".join(beaten.get(method, [])) or ("–" if method == "original" else "none")
        lines.append(f"| {method} ({sec}) | {' | '.join(cells)} | {by} |")
    lines.append("")
    lines.append(
        f"Mean ± 95 % CI half-width (Student's t) over {seeds} seed(s) (the mean alone for one seed: no interval); "
        "the original is scored once; × = unlearned / original FID. *Dominated by*: the methods with a lower retain "
        "FID and a higher forget FID, both beyond the intervals."
    )
    if "ours" in beaten:
        front = [m for m, by in beaten.items() if not by]
        paired = [m for m in res.runs if m != "ours" and paired_dominates(res.runs[m], res.runs["ours"])]
        verdict = _verdict(dict(rows[1:]), beaten["ours"], seeds, paired)
        lines += ["", f"On the front by the intervals: {', '.join(front)}. {verdict}"]
        lines += _paired_lines(res)
    md.write_text("\n".join(lines) + "\n")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seeds"] + [c for k, _ in cols for c in (k, f"{k}_ci95")] + ["dominated_by"])
        for method, vals in rows:
            n = len(res.runs.get(method, [None]))
            stats = [x for k, _ in cols for x in vals.get(k, (float("nan"), float("nan")))]
            w.writerow([method, n] + stats + [" ".join(beaten.get(method, []))])
    write_seeds_csv(res, seeds_csv(csv_path))
    return md


def _paired_lines(res: Comparison) -> list[str]:
    """The paired-by-seed differences behind the verdict, one row per method that shares two or more seeds with
    ours (what :func:`paired_dominates` tests), so a reader can check the verdict without the per-seed runs."""
    rows = []
    for m in res.runs:
        diff = None if m == "ours" else paired_differences(res.runs[m], res.runs["ours"])
        if diff is not None:
            n, (dr, drh), (df, dfh) = diff
            rows.append(f"| {m} | {n} | {fmt_ci(dr, drh, n)} | {fmt_ci(df, dfh, n)} |")
    if not rows:
        return []
    head = [
        "",
        "Paired by seed, method − ours (mean ± 95 % CI of the per-seed differences; dominated paired by seed "
        "when retain is wholly below 0 and forget wholly above 0):",
        "",
        "| method | shared seeds | retain FID − ours | forget FID − ours |",
        "|---|---|---|---|",
    ]
    return head + rows


SEED_COLUMNS = ("retain/fid", "forget/fid", "retain/fid_ratio", "forget/fid_ratio")


def seeds_csv(csv_path: Path) -> Path:
    """Where the per-seed values sit beside the table's CSV (``table.csv`` -> ``table-seeds.csv``)."""
    return csv_path.with_name(f"{csv_path.stem}-seeds.csv")


def write_seeds_csv(res: Comparison, path: Path) -> Path:
    """Every run's own figures, one row per method and seed, with the original's hash: what the intervals were
    computed from, so separate comparisons (other seeds, other originals) can be pooled and re-checked."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", *SEED_COLUMNS, "original_sha256", "run_dir"])
        for method, runs in res.runs.items():
            for r in sorted(runs, key=lambda r: r["seed"]):
                extra = [r.get("original_sha256", ""), r.get("run_dir", "")]
                w.writerow([method, r["seed"], *(r.get(k, "") for k in SEED_COLUMNS), *extra])
    return path


def grid_strips(grid, columns: int = GRID_COLUMNS, pad: int = GRID_PAD) -> list:
    """The ``columns`` columns of a run's ``samples.png`` (``evaluate.sample_grid``: one sample per row, columns
    input | masked | original | unlearned, ``pad`` pixels between tiles) as horizontal strips: strip ``c`` holds
    column ``c``'s tiles left to right in the grid's row order (retain rows first). An array H x W (x C) in, a list
    of ``columns`` arrays (tile + 2 pad) x (rows x (tile + pad) + pad) out, the padding kept as it was."""
    import numpy as np

    h, w = grid.shape[:2]
    step = (w - pad) // columns
    rows = (h - pad) // step
    if step <= pad or rows < 1 or columns * step + pad != w or rows * step + pad != h:
        raise ValueError(f"a {h}x{w} image is not a {columns}-column grid of square tiles with {pad} px padding")
    strips = []
    for c in range(columns):
        col = grid[:, c * step : (c + 1) * step + pad]  # every tile of column c with its left and right padding
        tiles = [col[r * step : (r + 1) * step + pad] for r in range(rows)]  # tile r with its top and bottom padding
        strips.append(np.concatenate([t[:, :-pad] for t in tiles] + [tiles[-1][:, -pad:]], axis=1))
    return strips


def samples_figure(res: Comparison, path: Path) -> Path:
    """The first seed's completions of the same retain and forget images, one row per method (the paper's
    comparison figures): rows ground truth, masked input, original model, then each method's unlearned model;
    columns the retain images, then the forget images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    grids = [(m, Path(r[0]["run_dir"]) / GRID_FILE) for m, r in res.runs.items()]
    grids = [(m, p) for m, p in grids if p.is_file()]
    if not grids:
        raise FileNotFoundError(f"no {GRID_FILE} in the runs of {res.folder}")
    first = grid_strips(mpimg.imread(grids[0][1]))
    rows = [("ground truth", first[0]), ("masked", first[1]), ("original", first[2])]
    rows += [(m, grid_strips(mpimg.imread(p))[3]) for m, p in grids]
    h, w = rows[0][1].shape[:2]
    fig, axes = plt.subplots(len(rows), 1, figsize=(w / 60 + 1.6, len(rows) * h / 60), dpi=120, squeeze=False)
    for ax, (name, strip) in zip(axes[:, 0], rows):
        ax.imshow(strip, cmap="gray" if strip.ndim == 2 else None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        for side in ax.spines.values():
            side.set_visible(False)
    axes[0, 0].set_title("the retain images, then the forget images (left to right)", fontsize=8)
    fig.tight_layout(h_pad=0.2)
    fig.savefig(path)
    plt.close(fig)
    return path


def frontier_figure(res: Comparison, path: Path, title: str) -> Path:
    """Retain vs forget FID of every method (mean, 95 % CI bars) and the original."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for method, vals in _rows(res):
        (rx, rh), (fy, fh) = vals["retain/fid"], vals["forget/fid"]
        if method == "original":
            ax.scatter(rx, fy, marker="*", s=220, color="gold", edgecolor="k", zorder=5, label="original")
        else:
            ax.errorbar(rx, fy, xerr=rh, yerr=fh, fmt="o", capsize=3, label=method)
    from raysweep.frontier import FORGET_AXIS, RETAIN_AXIS, finish_figure

    return finish_figure(fig, ax, path, RETAIN_AXIS, FORGET_AXIS, title)


def _parent_run(uri: str, cfg: Config, name: str, methods: list[str], seeds: int) -> str:
    from raysweep.tracking import _client, _experiment_id, _log_params

    client = _client(uri)
    exp = _experiment_id(client, cfg.tracking.experiment)
    found = client.search_runs([exp], filter_string=f"tags.`{COMPARE_TAG}` = '{name}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp, run_name=name, tags={COMPARE_TAG: name})
    base = {k: v for k, v in flatten(cfg.to_dict()).items() if not k.startswith("sweep.")}
    _log_params(client, run.info.run_id, {**base, "compare.methods": ",".join(methods), "compare.seeds": seeds})
    return run.info.run_id


def _child_run(uri: str, cfg: Config, parent: str, method: str, seed: int, run_dir: Path, metrics: dict) -> None:
    """One child run per method x seed (skipped when it exists: a resumed comparison)."""
    from raysweep.tracking import _client, _experiment_id, log_finite_metrics

    client = _client(uri)
    exp = _experiment_id(client, cfg.tracking.experiment)
    run_name = f"{method}-seed{seed}"
    found = client.search_runs(
        [exp], filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.mlflow.runName = '{run_name}'"
    )
    if found:
        return
    run = client.create_run(
        exp, run_name=run_name, tags={"mlflow.parentRunId": parent, COMPARE_TAG + ".method": method}
    )
    rid = run.info.run_id
    client.log_param(rid, "unlearn.method", method)
    client.log_param(rid, "seed", seed)
    log_finite_metrics(client, rid, metrics)
    for name in ("config.yaml", METRICS_FILE, GRID_FILE):
        if (Path(run_dir) / name).is_file():
            client.log_artifact(rid, str(Path(run_dir) / name))
    from raysweep.tracking import set_provenance_tags

    set_provenance_tags(client, rid, metrics)
    client.set_terminated(rid)


def _log_files(uri: str, parent: str, files: list[Path]) -> None:
    from raysweep.tracking import _client

    client = _client(uri)
    for f in dict.fromkeys(files):
        client.log_artifact(parent, str(f))
    client.set_terminated(parent)
