"""FID / IS through torch-fidelity with the in-domain extractor, and the feature cache's keying."""

import pytest
import torch

from raysweep.jobs import extractor_job
from raysweep.metrics.extractors import INDOMAIN
from raysweep.metrics.fidelity import Extractor, fid_is, to_uint8
from raysweep.models.checkpoints import save_atomic, sha256
from raysweep.train import LocalHooks, fit


def _extractor(tiny_cfg, path):
    fit(extractor_job(tiny_cfg.replace(**{"pretrain.extractor_epochs": 3}), output=str(path)), LocalHooks(), 0)
    return path


def test_fid_is_zero_for_identical_sets_and_grows_with_damage(tiny_cfg, tmp_path):
    from raysweep.data.datasets import synthetic

    ext_path = _extractor(tiny_cfg, tmp_path / "e.pt")
    ext = Extractor(INDOMAIN, str(ext_path), f"{INDOMAIN}-{sha256(ext_path)[:12]}")
    ds = synthetic(False, 16, 6, per_class=40)
    ref = to_uint8(torch.stack([ds[i][0] for i in range(len(ds))]))
    same = fid_is(ref, ref, ext, batch_size=64)
    noisy = fid_is(to_uint8(torch.rand(len(ref), 3, 16, 16)), ref, ext, batch_size=64)
    assert abs(same["fid"]) < 1e-6 and noisy["fid"] > 1e4 * max(abs(same["fid"]), 1e-9) and same["is"] > 1.0


def test_feature_cache_never_mixes_two_extractors(tiny_cfg, tmp_path, monkeypatch):
    """Regression: the reference-feature cache was keyed by the extractor's *config*; a second extractor file
    for the same config then reused the first one's reference statistics and gave garbage FIDs."""
    from raysweep.data.datasets import synthetic

    a = _extractor(tiny_cfg, tmp_path / "a.pt")
    state = torch.load(a, weights_only=True)
    state["model"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in state["model"].items()}
    b = tmp_path / "b.pt"
    save_atomic(state, b)
    ds = synthetic(False, 16, 6, per_class=30)
    ref = to_uint8(torch.stack([ds[i][0] for i in range(len(ds))]))
    gen = to_uint8(torch.stack([ds[i][0] for i in range(len(ds))]).flip(-1))
    from raysweep.pretrain import extractor_label

    monkeypatch.setattr("raysweep.pretrain.extractor_path", lambda cfg: a)
    la = extractor_label(tiny_cfg)
    monkeypatch.setattr("raysweep.pretrain.extractor_path", lambda cfg: b)
    lb = extractor_label(tiny_cfg)
    assert la != lb
    fid_is(gen, ref, Extractor(INDOMAIN, str(a), la), batch_size=64)  # fills the cache for a
    with_b = fid_is(gen, ref, Extractor(INDOMAIN, str(b), lb), batch_size=64)
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "fresh"))
    fresh_b = fid_is(gen, ref, Extractor(INDOMAIN, str(b), lb), batch_size=64)
    assert abs(with_b["fid"] - fresh_b["fid"]) < 1e-6


def test_completion_reports_progress_per_batch(caplog):
    """Evaluation of a diffusion model takes minutes: ``complete`` logs each finished batch."""
    import logging

    from raysweep.config import ModelConfig, TaskConfig
    from raysweep.metrics import complete
    from raysweep.models import get_family
    from tests.conftest import TINY_PALETTE

    fam = get_family("palette")
    model = fam.build(ModelConfig(family="palette", options=TINY_PALETTE)).eval()
    with caplog.at_level(logging.INFO, logger="raysweep.metrics"):
        out, masks = complete(
            fam,
            model,
            torch.rand(5, 3, 16, 16),
            TaskConfig("center", 0.5),
            torch.device("cpu"),
            batch_size=2,
            desc="evaluating forget",
        )
    assert out.shape == (5, 3, 16, 16) and masks.shape == (5, 16, 16)
    lines = [r.getMessage() for r in caplog.records if "evaluating forget" in r.getMessage()]
    assert lines == [
        "evaluating forget: 2/5 images completed",
        "evaluating forget: 4/5 images completed",
        "evaluating forget: 5/5 images completed",
    ]


def test_classifier_on_outputs_is_one_on_images_it_classifies_right(tiny_cfg, tmp_path):
    from raysweep.data.datasets import synthetic
    from raysweep.metrics import classifier_scores
    from raysweep.metrics.extractors import load_classifier

    clf = load_classifier(_extractor(tiny_cfg, tmp_path / "e.pt")).eval()
    ds = synthetic(False, 16, 6, per_class=20)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        right = clf(x).argmax(1) == y
    assert right.any()
    s = classifier_scores(clf, x[right], x[right], y[right], torch.device("cpu"))
    assert s["accuracy"] == 1.0 and abs(s["indomain_cos"] - 1.0) < 1e-5
    noise = classifier_scores(clf, torch.rand_like(x), x, y, torch.device("cpu"))
    assert noise["indomain_cos"] < 0.99


@pytest.mark.parametrize("family", ["mae", "palette"])
def test_e2_second_reconstructions_keep_the_first_hole_and_regenerate_around_it(family, tiny_cfg):
    """App. E.2: the model fills the hole; the original regenerates the complement around that fill."""
    from raysweep.config import TaskConfig
    from raysweep.data.masks import task_mask
    from raysweep.metrics.crossval import second_reconstructions
    from raysweep.models import get_family
    from tests.conftest import TINY_OPTIONS

    fam = get_family(family)
    cfg = tiny_cfg.replace(**{"model.family": family, "model.options": dict(TINY_OPTIONS[family])})
    torch.manual_seed(0)
    model, original = fam.build(cfg.model).eval(), fam.build(cfg.model).eval()
    x = torch.rand(4, 3, 16, 16)
    task = TaskConfig("center", 0.5)
    second = second_reconstructions(fam, model, original, x, task, torch.device("cpu"), batch=4)
    hole = task_mask(task, 4, 16, fam.patch_size(model)).unsqueeze(1).expand_as(x)
    first = fam.generate(model, x, hole[:, 0])
    assert torch.allclose(second[hole], first[hole])  # the first reconstruction's hole is kept
    assert not torch.allclose(second[~hole], x[~hole])  # the outside was regenerated by the original


def test_fid_ignores_the_batch_size_is_of_a_constant_batch_is_one_and_the_reference_cache_is_hit(tiny_cfg, tmp_path):
    from raysweep.data.datasets import synthetic
    from raysweep.paths import cache_dir

    ext_path = _extractor(tiny_cfg, tmp_path / "e.pt")
    ext = Extractor(INDOMAIN, str(ext_path), f"{INDOMAIN}-{sha256(ext_path)[:12]}")
    ds = synthetic(False, 16, 6, per_class=40)
    ref = to_uint8(torch.stack([ds[i][0] for i in range(len(ds))]))
    gen = to_uint8(torch.stack([ds[i][0] for i in range(len(ds))]).flip(-1))
    a, b = fid_is(gen, ref, ext, batch_size=16), fid_is(gen, ref, ext, batch_size=64)
    assert abs(a["fid"] - b["fid"]) < 1e-4 * max(1.0, abs(a["fid"]))
    const = fid_is(ref[:1].expand(len(ref), -1, -1, -1).contiguous(), ref, ext, batch_size=64)
    assert abs(const["is"] - 1.0) < 1e-3
    cached = sorted((cache_dir() / "fidelity").rglob("*raysweep-ref-*"))
    assert cached, "the reference statistics were not cached"
    stamps = [p.stat().st_mtime_ns for p in cached]
    fid_is(gen, ref, ext, batch_size=64)  # a hit: the cached statistics are read, not rewritten
    assert [p.stat().st_mtime_ns for p in cached] == stamps
