"""The original's quality gate (raysweep.quality): a weak original stops the run before unlearning, with the fix."""

import pytest
import torch

import raysweep.metrics as metrics
from raysweep.jobs import extractor_job
from raysweep.models import get_family
from raysweep.models.checkpoints import save_atomic
from raysweep.quality import OriginalQualityError, assess, gate, report_path
from raysweep.train import LocalHooks, fit


@pytest.fixture
def files(tiny_cfg, tmp_path):
    ext = tmp_path / "ext.pt"
    fit(extractor_job(tiny_cfg.replace(**{"pretrain.extractor_epochs": 8}), output=str(ext)), LocalHooks())
    orig = tmp_path / "orig.pt"
    save_atomic({"model": get_family("mae").build(tiny_cfg.model).state_dict()}, orig)
    return orig, ext


def _completing_with(monkeypatch, how):
    """Make every model's completion the real image (``real``) or a flat fill of the hole (``flat``)."""
    real_complete = metrics.complete

    def fake(family, model, images, task, device, batch_size=250, desc=""):
        _, masks = real_complete(family, model, images, task, device, batch_size)
        if how == "real":
            return images.clone(), masks
        return torch.where(masks.unsqueeze(1).expand_as(images), images.mean(), images), masks

    monkeypatch.setattr(metrics, "complete", fake)


def test_a_perfect_original_passes(tiny_cfg, files, monkeypatch):
    _completing_with(monkeypatch, "real")
    r = gate(tiny_cfg.replace(**{"pretrain.quality_gate": True}), *files, "ext-label")
    assert r["passed"] and not r["failures"] and r["part"] == "val"
    for m in r["groups"].values():
        assert m["hole_mse"] == 0 and m["fid_vs_flat"] < 0.05 and m["accuracy_kept"] == 1.0
        assert m["images"] == 2 * tiny_cfg.data.val_images_per_class


def test_a_flat_filling_original_is_stopped_with_the_fix(tiny_cfg, files, monkeypatch):
    _completing_with(monkeypatch, "flat")
    cfg = tiny_cfg.replace(**{"pretrain.quality_gate": True})
    with pytest.raises(OriginalQualityError) as e:
        gate(cfg, *files, "ext-label")
    msg = str(e.value)
    assert "retain fid_vs_flat=1.000" in msg and "forget fid_vs_flat=1.000" in msg and "hole_mse" not in msg
    assert "pretrain.epochs" in msg and "pretrain.quality_gate=false" in msg
    # the report is cached next to the original: asking again computes nothing
    monkeypatch.setattr(metrics, "complete", lambda *a, **k: pytest.fail("recomputed a cached report"))
    r = assess(cfg, *files, "ext-label")
    assert not r["passed"] and len(r["failures"]) >= 2 and r["groups"]["retain"]["hole_mse_vs_flat"] == 1.0
    # switched off: the same report, no stop
    assert gate(tiny_cfg.replace(**{"pretrain.quality_gate": False}), *files, "ext-label")["passed"] is False


def test_the_report_is_keyed_by_how_the_original_completes(tiny_cfg, files):
    """A report made with one sampler / decoding setting is not reused for another (Palette's DDIM-25 report was
    once reused for SDE-DPM-Solver++ completions), nor across task or device."""
    orig, _ = files
    cpu = torch.device("cpu")
    base = report_path(tiny_cfg, orig, "ext", cpu)
    for change in ({"model.options.mask_ratio": 0.5}, {"eval.task.ratio": 0.25}, {"data.forget_classes": [0, 4]}):
        assert report_path(tiny_cfg.replace(**change), orig, "ext", cpu) != base, change
    assert report_path(tiny_cfg, orig, "ext", torch.device("cuda")) != base
    assert report_path(tiny_cfg.replace(**{"unlearn.alpha": 9.0}), orig, "ext", cpu) == base  # unlearning settings
    pal = tiny_cfg.replace(**{"model.family": "palette", "model.options": {}})
    pal_base = report_path(pal, orig, "ext", cpu)
    training = ({"frozen_input_blocks": 2}, {"unlearn_t_max": 0.5}, {"forget_context": "noise"}, {"forget_t_max": 0.5})
    for training_only in training:
        assert report_path(pal.replace(**{"model.options": training_only}), orig, "ext", cpu) == pal_base
    assert report_path(pal.replace(**{"model.options": {"sample_steps": 10}}), orig, "ext", cpu) != pal_base
