"""Sweep wall time with ASHA vs without, at an equal trial budget, and the frontier hypervolume each reaches.

Both sweeps run the same config, seed and ``sweep.num_samples``; hypervolumes share one reference point (the
original model's forget FID, and 1.05 x the worst retain FID seen in either sweep), so they compare directly.

    python benchmarks/sweep_asha.py [--config PATH] [key=value ...]
"""

from __future__ import annotations

import argparse
import time

from raysweep.cli import parse_args
from raysweep.config import load_config
from raysweep.frontier import hypervolume, pareto_front
from raysweep.tune import run_sweep


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="experiments/configs/mae_fmnist.yaml")
    p.add_argument("overrides", nargs="*")
    args = parse_args(p)
    base = load_config(args.config, args.overrides)
    results = {}
    for sched in ("none", "asha"):
        cfg = base.replace(**{"sweep.scheduler": sched, "name": f"{base.name}-bench-{sched}"})
        t = time.perf_counter()
        res = run_sweep(cfg)
        results[sched] = (time.perf_counter() - t, res)
    pts = [q for _, r in results.values() for q in r.points if q.valid]
    if not pts:
        print("no finished trials")
        return 1
    orig_forget = pts[0].extra.get("original/forget/fid", min(q.forget_fid for q in pts))
    ref_retain = 1.05 * max(q.retain_fid for q in pts)
    print(
        f"equal budget: {base.sweep.num_samples} trials each; reference point retain FID {ref_retain:.2f}, "
        f"forget FID {orig_forget:.2f}"
    )
    for sched, (wall, r) in results.items():
        hv = hypervolume(pareto_front(r.points), ref_retain, orig_forget)
        print(
            f"  {sched:>4}: wall {wall:7.1f} s   trials {len(r.points)}   front {len(r.front)}   hypervolume {hv:9.2f}"
        )
    (tn, rn), (ta, ra) = results["none"], results["asha"]
    hvn = hypervolume(pareto_front(rn.points), ref_retain, orig_forget)
    hva = hypervolume(pareto_front(ra.points), ref_retain, orig_forget)
    print(f"  ratio asha/none: wall {ta / tn:.3f}   hypervolume {hva / hvn if hvn else float('nan'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
