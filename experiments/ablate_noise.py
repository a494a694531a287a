"""Noise ablation (App. E; App. C.4's data-driven Σ): Gaussian Σ = I vs uniform vs the official batch-statistics
noise vs low-rank Σ (top-k principal directions of the forget images plus an isotropic floor, unlearn.noise_rank).

    python experiments/ablate_noise.py [--seeds 3] [--config mae_fmnist] [--smoke-test] [key=value ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablate import run  # noqa: E402

if __name__ == "__main__":
    run(["unlearn.noise", "gaussian", "uniform", "batch_stats", "lowrank"], __doc__, "ablate_noise")
