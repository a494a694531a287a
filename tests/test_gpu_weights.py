"""Checks that need hardware or files this machine lacks: they skip cleanly when absent."""

import os
from pathlib import Path

import pytest
import torch

from raysweep.config import ModelConfig, TaskConfig
from raysweep.data.masks import task_mask
from raysweep.models import get_family


@pytest.mark.weights
def test_official_mae_vit_base_completes_images():
    path = (
        Path(os.environ.get("RAYSWEEP_WEIGHTS", "~/.cache/raysweep/weights")).expanduser()
        / "mae_visualize_vit_base.pth"
    )
    if not path.is_file():
        pytest.skip(f"{path} not present (download mae_visualize_vit_base.pth from facebookresearch/mae)")
    fam = get_family("mae")
    model = fam.build(ModelConfig(preset="vit_base", checkpoint=str(path))).eval()
    x = torch.rand(2, 3, 224, 224)
    y = fam.generate(model, x, task_mask(TaskConfig("center", 0.5), 2, 224))
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.gpu
def test_unlearning_step_on_cuda(tiny_cfg, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from raysweep.jobs import pretrain_job, unlearn_job
    from raysweep.train import LocalHooks, fit

    fit(pretrain_job(tiny_cfg, output=str(tmp_path / "o.pt")), LocalHooks("cuda"), 0)
    job = unlearn_job(tiny_cfg, original=str(tmp_path / "o.pt"), finish=lambda m, d: None)
    fit(job, LocalHooks("cuda"), 0)
    assert next(job.module.parameters()).is_cuda
