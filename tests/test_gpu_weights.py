"""Checks that need hardware or files this machine lacks: they skip cleanly when absent."""

import os
from pathlib import Path

import pytest
import torch

from raysweep.config import ModelConfig, TaskConfig
from raysweep.data.masks import task_mask
from raysweep.models import get_family
from tests.conftest import TINY_OPTIONS


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
@pytest.mark.parametrize(
    "family,extra",
    [(f, {}) for f in sorted(TINY_OPTIONS)] + [("mage", {"train_masks": "mixed"})],  # MAGE's task-mask pretraining
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={w}" for k, w in v.items()) or "default",
)
def test_every_family_pretrains_unlearns_generates_and_is_scored_on_cuda(family, extra, tiny_cfg, tmp_path):
    """The family contract on the GPU: one pretraining step per stage, Eq. 10 steps (decoder bit-identical on the
    device), generate, and FID / IS of the completions with the in-domain extractor on CUDA."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from raysweep.data.masks import task_mask
    from raysweep.jobs import extractor_job, pretrain_job, unlearn_job
    from raysweep.metrics.extractors import INDOMAIN
    from raysweep.metrics.fidelity import Extractor, fid_is, to_uint8
    from raysweep.train import LocalHooks, fit

    cfg = tiny_cfg.replace(**{"model.family": family, "model.options": {**TINY_OPTIONS[family], **extra}})
    fam = get_family(family)
    orig = str(tmp_path / "o.pt")
    init = None
    for st in fam.pretrain_stages(cfg):
        fit(pretrain_job(cfg, output=orig, stage=st.name, init=init), LocalHooks("cuda"), max_steps=None)
        init = orig
    job = unlearn_job(cfg, original=orig, finish=lambda m, d: None)
    enc = {id(q) for q in fam.encoder_parameters(job.module)}
    dec_before = {n: q.detach().clone() for n, q in job.module.named_parameters() if id(q) not in enc}
    fit(job, LocalHooks("cuda"))
    model = job.module
    assert next(model.parameters()).is_cuda
    for n, q in model.named_parameters():
        if n in dec_before:
            assert torch.equal(q.detach().cpu(), dec_before[n].cpu()), n
    x = torch.rand(64, 3, 16, 16, device="cuda")  # enough images for finite FID / IS statistics
    m = task_mask(TaskConfig("center", 0.5), 64, 16, device="cuda")
    y = fam.generate(model.eval(), x, m)
    assert y.is_cuda and y.shape == x.shape and torch.isfinite(y).all()
    ext = tmp_path / "e.pt"
    fit(extractor_job(cfg, output=str(ext)), LocalHooks("cuda"))
    s = fid_is(to_uint8(y), to_uint8(x), Extractor(INDOMAIN, str(ext), "gpu-test"), cuda=True)
    assert all(torch.isfinite(torch.tensor(v)) for v in s.values())
