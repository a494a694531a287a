"""What produced a result: the package versions and the source commit, recorded in every run's metrics.json and
as MLflow tags next to the seed and the weights' content hashes (docs/reliability.md)."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("raysweep", "torch", "torchvision", "timm", "ray", "mlflow", "optuna", "torch-fidelity", "numpy")


@functools.cache
def git_commit() -> str:
    """The commit of the raysweep source tree (``+dirty`` with uncommitted changes); "" outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")


@functools.cache
def provenance() -> dict[str, str]:
    """``{"python": ..., "<package>": version, ..., "git_commit": ...}`` (absent packages are left out)."""
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    out["git_commit"] = git_commit()
    return out
