"""Reproduce the README's results from an empty cache and write them as a Markdown block (the README's numbers come
from here, with the date and the machine).

    python benchmarks/reproduce.py [--families mae,mage,palette] [--seeds 0,1,2] [--splits default,5-9,evens]
                                   [--unlearn-seeds 1] [--sweep] [--out docs/repro/reproduce.md] [--keep DIR]

In a new temporary folder (an empty ``RAYSWEEP_CACHE`` and results folder, nothing from this machine's caches),
it runs, as subprocesses, exactly the commands a user types:

1. with ``--sweep``, first the README's first command, ``python experiments/tune_alpha.py`` (so its wall time
   includes pretraining the original and the extractor from nothing);
2. for every family, pretraining seed and class split, ``raysweep unlearn --config <family YAML>
   pretrain.seed=S data.forget_classes=[..] data.retain_classes=[..]`` (a seed's first cell pretrains its original
   from nothing; the other splits of that seed reuse it, as a user's second command would); with
   ``--unlearn-seeds K``, each cell is unlearned K times (``seed=0..K-1``: the unlearning's data order and draws;
   the original and the evaluation images stay the same) and the block adds each cell's mean ± 95 % CI;

then writes the block: machine, commands, per-cell ratios (the robustness table), the time breakdown and the
original's completions picture (copied next to the Markdown file).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raysweep.cli import parse_args

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "mae": "experiments/configs/mae_fmnist.yaml",
    "mage": "experiments/configs/mage_fmnist.yaml",
    "palette": "experiments/configs/palette_fmnist.yaml",
}
SPLITS = {
    "default": ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]),
    "5-9": ([5, 6, 7, 8, 9], [0, 1, 2, 3, 4]),
    "evens": ([0, 2, 4, 6, 8], [1, 3, 5, 7, 9]),
}
BARS = {"mae": 1.8, "mage": 2.0, "palette": 2.0}  # forget x the README promises per family (retain <= 1.15)


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )


def run(cmd: list[str], env: dict, log: Path) -> tuple[float, str, int]:
    """Run ``cmd`` in the checkout, streaming its output to ``log``; returns (seconds, output, exit status)."""
    print("$ " + " ".join(cmd), flush=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
    out = log.read_text()
    if p.returncode != 0:
        print(f"command failed (exit {p.returncode}), log: {log}\n{out[-3000:]}", flush=True)
    return time.perf_counter() - t, out, p.returncode


def fmt_s(s: float) -> str:
    return f"{int(s // 60)} min {int(s % 60):02d} s"


def _int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,2") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="mae")
    ap.add_argument("--seeds", type=_int_list, default="0,1,2", help="pretraining seeds, e.g. 0,1,2")
    ap.add_argument("--splits", default="default,5-9,evens")
    ap.add_argument("--unlearn-seeds", type=int, default=1, help="unlearning seeds per cell (mean ± 95 %% CI)")
    ap.add_argument("--sweep", action="store_true", help="also time the README's first command from empty caches")
    ap.add_argument("--out", default="docs/repro/reproduce.md")
    ap.add_argument("--keep", help="use this (empty or new) folder instead of a temporary one, and keep it")
    ap.add_argument(
        "overrides",
        nargs="*",
        help="key=value overrides passed to every command (e.g. for a quick check: data.images_per_class=200)",
    )
    args = parse_args(ap, argv)
    families = args.families.split(",")
    seeds = args.seeds
    splits = args.splits.split(",")
    bad = [f for f in families if f not in CONFIGS] + [s for s in splits if s not in SPLITS]
    if bad:
        raise SystemExit(f"unknown families / splits {bad}; families: {list(CONFIGS)}, splits: {list(SPLITS)}")
    if args.unlearn_seeds < 1:
        raise SystemExit(f"--unlearn-seeds {args.unlearn_seeds}: give at least 1")
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="raysweep-reproduce-"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty: the reproduction must start from an empty cache")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    # this checkout's code, also in Ray's worker processes (they inherit the environment), whatever is installed
    env = {
        **os.environ,
        "RAYSWEEP_CACHE": str(work / "cache"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    env.pop("RAYSWEEP_DATA", None)
    common = [f"tracking.results_dir={work / 'results'}", *args.overrides]
    started = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"Measured by `python benchmarks/reproduce.py {' '.join(sys.argv[1:])}` on "
        f"{started:%Y-%m-%d} from an empty cache; machine: {machine()}.",
        "",
    ]
    sweep_lines: list[str] = []
    if args.sweep:
        secs, out, rc = run([sys.executable, "experiments/tune_alpha.py", *common], env, work / "logs" / "sweep.log")
        front = [ln.strip() for ln in out.splitlines() if re.match(r"\s+\S+: retain FID", ln)]
        status = f"**{fmt_s(secs)}** wall" if rc == 0 else f"**failed** (exit {rc}) after {fmt_s(secs)}"
        sweep_lines = [
            f"**`python experiments/tune_alpha.py`** from an empty cache: {status} "
            f"(pretraining, extractor, quality gate, the trials, and the {len(front)} trials on the front re-scored "
            "on the test images):",
            "",
            "```",
            *[
                ln
                for ln in out.splitlines()
                if "trials," in ln
                or "on the test images" in ln
                or ln.startswith("time (s):")
                or re.match(r"\s+\S+: retain FID", ln)
            ],
            "```",
            "",
        ]
        write_block(ROOT / args.out, lines + sweep_lines, [], families, [])
    rows, pictures = [], []
    cells = [(f, s, sp, u) for f in families for s in seeds for sp in splits for u in range(args.unlearn_seeds)]
    for fam, seed, split, useed in cells:
        forget, retain = SPLITS[split]
        cmd = [
            sys.executable,
            "-m",
            "raysweep.cli",
            "unlearn",
            "--config",
            CONFIGS[fam],
            f"pretrain.seed={seed}",
            f"data.forget_classes={forget}".replace(" ", ""),
            f"data.retain_classes={retain}".replace(" ", ""),
            *([f"seed={useed}"] if useed else []),
            *common,
        ]
        log = work / "logs" / f"{fam}-s{seed}-{split}{f'-u{useed}' if useed else ''}.log"
        secs, out, rc = run(cmd, env, log)
        m = re.search(r"run folder: (\S+)", out)
        if rc != 0 or not m:  # recorded as a failed cell; the other cells still run
            last = [ln for ln in out.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
            rows.append((fam, seed, split, useed, {"failed": f"exit {rc}: {last[0][:200]}"}, secs))
        else:
            met = json.loads((Path(m.group(1)) / "metrics.json").read_text())
            rows.append((fam, seed, split, useed, met, secs))
        if split == splits[0] and useed == 0:
            pics = sorted((work / "cache" / "originals").glob(f"{fam}-*.png"), key=os.path.getmtime)
            if pics:
                pictures.append((fam, seed, pics[-1]))
        write_block(ROOT / args.out, lines + sweep_lines, rows, families, pictures)
    out = write_block(ROOT / args.out, lines + sweep_lines, rows, families, pictures)
    print(out)
    print(f"\nwritten to {ROOT / args.out}; work folder {work}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not any("failed" in r[4] for r in rows) and "failed**" not in "".join(sweep_lines) else 1


def write_block(out_path: Path, head: list[str], rows: list, families: list[str], pictures: list) -> str:
    """Write the results block measured so far (after every command: a long run that dies keeps what it had).
    ``rows``: (family, pretrain seed, split, unlearning seed, metrics or {"failed": why}, seconds)."""
    from raysweep.compare import fmt_ci, mean_ci

    out_path.parent.mkdir(parents=True, exist_ok=True)
    lines = list(head)
    lines += [
        "| family | pretrain seed | forget classes | unlearn seed | retain FID orig → unlearned "
        "| forget FID orig → unlearned | retain × | forget × | wall | pretrain / extractor / gate / train / eval (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fam, seed, split, useed, m, secs in rows:
        if "failed" in m:
            lines.append(f"| {fam} | {seed} | {split} | {useed} | failed: {m['failed']} | | | | {fmt_s(secs)} | |")
            continue
        s = m.get("seconds", {})
        parts = "/".join(f"{s.get(k, 0):.0f}" for k in ("pretrain", "extractor", "quality_gate", "train", "evaluate"))
        lines.append(
            f"| {fam} | {seed} | {split} | {useed} | {m['original/retain/fid']:.2f} → {m['retain/fid']:.2f} | "
            f"{m['original/forget/fid']:.2f} → {m['forget/fid']:.2f} | {m['retain/fid_ratio']:.2f} | "
            f"**{m['forget/fid_ratio']:.2f}** | {fmt_s(secs)} | {parts} |"
        )
    lines.append("")
    cells: dict[tuple, list[dict]] = {}
    for fam, seed, split, _, m, _ in rows:
        if "failed" not in m:
            cells.setdefault((fam, seed, split), []).append(m)
    if any(len(v) > 1 for v in cells.values()):
        lines += [
            "Over the unlearning seeds (mean ± 95 % CI half-width, Student's t):",
            "",
            "| family | pretrain seed | forget classes | runs | retain × | forget × |",
            "|---|---|---|---|---|---|",
        ]
        for (fam, seed, split), ms in cells.items():
            r = mean_ci([x["retain/fid_ratio"] for x in ms])
            f = mean_ci([x["forget/fid_ratio"] for x in ms])
            lines.append(
                f"| {fam} | {seed} | {split} | {len(ms)} | {fmt_ci(*r, len(ms))} | **{fmt_ci(*f, len(ms))}** |"
            )
        lines.append("")
    for fam in families:
        r = [m for f, _, _, _, m, _ in rows if f == fam and "failed" not in m]
        if r:
            fx, rx = [m["forget/fid_ratio"] for m in r], [m["retain/fid_ratio"] for m in r]
            lines.append(
                f"- {fam}: {len(r)} run{'s' * (len(r) > 1)}, forget × {min(fx):.2f}–{max(fx):.2f} (bar {BARS[fam]}), "
                f"retain × {min(rx):.2f}–{max(rx):.2f} (bar 1.15); extractor {r[0]['extractor']}."
            )
    lines.append("")
    for fam, seed, pic in pictures:
        dst = out_path.parent / f"{out_path.stem}-{fam}-seed{seed}-original.png"  # never another block's picture
        shutil.copyfile(pic, dst)
        lines.append(
            f'<img src="{dst.name}" height="300" alt="{fam} original, pretrain seed {seed}: image | '
            'masked | completion (center 1/2, then random 75 %)">'
        )
    text = "\n".join(lines) + "\n"
    out_path.write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
