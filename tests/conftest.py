"""Shared fixtures: tiny synthetic configs so that every test runs in seconds on 2 cores."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
import torch

from raysweep.config import Config

TINY_MAE = {
    "img_size": 16,
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
TINY_MAGE = {
    "img_size": 16,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "tok_ch": 8,
    "tok_z_channels": 8,
    "tok_n_embed": 16,
    "tok_num_res_blocks": 1,
    "tokenizer_epochs": 1,
    "decode_steps": 4,
}
TINY_PALETTE = {"inner_channel": 32, "channel_mults": [1, 2], "res_blocks": 1, "timesteps": 100, "sample_steps": 3}
# per family: model options that make the 16 px synthetic test configs fast
TINY_OPTIONS = {"mae": TINY_MAE, "mage": TINY_MAGE, "palette": TINY_PALETTE}


def tiny_dict(tmp_path) -> dict:
    return {
        "name": "tiny",
        "model": {"family": "mae", "preset": "tiny", "options": dict(TINY_MAE)},
        "data": {
            "dataset": "synthetic",
            "num_classes": 6,
            "image_size": 16,
            "forget_classes": [0, 1],
            "retain_classes": [2, 3],
            "images_per_class": 32,
            "test_images_per_class": 24,
            "val_images_per_class": 16,
        },
        # tiny models are far below the embedded default's quality bars: the gate reports but does not stop
        "pretrain": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "extractor_epochs": 1, "quality_gate": False},
        "unlearn": {"epochs": 2, "batch_size": 16, "log_every": 2, "lr": 5e-4, "warmup_epochs": 0.5},
        "eval": {"batch_size": 64, "grid_images": 2, "extractor": "indomain"},
        "resources": {"num_workers": 2, "cpus_per_worker": 0.5},
        "tracking": {"results_dir": str(tmp_path / "results")},
    }


@pytest.fixture
def tiny_cfg(tmp_path) -> Config:
    return Config.from_dict(tiny_dict(tmp_path))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own RAYSWEEP_CACHE unless it asks otherwise; torch threads kept small."""
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(store, port: int):
    """A real `mlflow server` (sqlite backend, artifacts under ``store``) on 127.0.0.1:``port``, once it answers."""
    import subprocess
    import sys
    import time
    import urllib.request

    store.mkdir(parents=True, exist_ok=True)
    log = store / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
             "--artifacts-destination", str(store / "artifacts")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return server
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                code = server.poll()
                server.kill()
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"mlflow server on port {port} did not start within 120 s (exit code {code}); its log:\n{tail}"
                ) from None
            time.sleep(1)


def ray_env(tmp_path: Path) -> tuple[dict, Path]:
    """The environment for a raysweep command with its own Ray temp folder (short: Ray's socket paths are limited
    to ~107 characters)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    env = {**os.environ, "RAYSWEEP_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}
    env["RAY_TMPDIR"] = str(ray_tmp)
    return env, ray_tmp


def pids(ray_tmp: Path, *needles: str) -> list[int]:
    """Processes of this test's own Ray (``RAY_TMPDIR`` in their environment) whose command line contains every one
    of ``needles`` (read from /proc; no psutil here)."""
    mark = f"RAY_TMPDIR={ray_tmp}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in env and all(n in cmd for n in needles):
            out.append(int(d.name))
    return out


def kill_ray(ray_tmp: Path) -> None:
    """SIGKILL whatever is left of this test's own Ray (never another Ray on the machine)."""
    for pid in pids(ray_tmp):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
