"""α ablation (paper Table 3 / App. E): retain and forget FID against the weight of the forget term in Eq. 10.

python experiments/ablate_alpha.py [--seeds 3] [--config mae_fmnist] [--smoke-test] [key=value ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablate import run  # noqa: E402

if __name__ == "__main__":
    run(["unlearn.alpha", "0.05", "0.1", "0.25", "0.5", "1.0", "2.0"], __doc__, "ablate_alpha")
