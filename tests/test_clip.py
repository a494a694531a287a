"""The CLIP cosine (paper §5) with a tiny open_clip model built from random weights: 1 for identical images, only
with weights on disk (no key otherwise), an explicit missing file refused in preflight, keyed in the score cache."""

import json

import pytest
import torch

from raysweep.config import ConfigError

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_clip(tmp_path, monkeypatch):
    """``open_clip_tiny-test.bin`` under $RAYSWEEP_WEIGHTS: a registered tiny config with random weights."""
    import open_clip

    cfg_dir = tmp_path / "clip_cfg"
    cfg_dir.mkdir()
    (cfg_dir / "tiny-test.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test")
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(model.state_dict(), weights / "open_clip_tiny-test.bin")
    monkeypatch.setenv("RAYSWEEP_WEIGHTS", str(weights))
    return "tiny-test"


def test_clip_cosine_of_identical_images_is_one_and_lower_for_others(tiny_clip):
    from raysweep.metrics.clip import clip_cosine, load_clip

    emb = load_clip(tiny_clip, None, torch.device("cpu"))
    x = torch.rand(6, 3, 16, 16)
    assert clip_cosine(emb, x, x, torch.device("cpu")) == pytest.approx(1.0, abs=1e-5)
    assert clip_cosine(emb, torch.rand(6, 3, 16, 16), x, torch.device("cpu")) < 0.999


def test_no_clip_key_without_weights_and_a_clip_key_with_them(tiny_cfg, tiny_clip, tmp_path, monkeypatch):
    from raysweep.jobs import pretrain_job
    from raysweep.metrics import evaluate
    from raysweep.metrics.clip import load_clip
    from raysweep.metrics.fidelity import Extractor
    from raysweep.models import get_family
    from raysweep.train import LocalHooks, fit

    fit(pretrain_job(tiny_cfg, output=str(tmp_path / "e.pt")), LocalHooks())
    from raysweep.jobs import extractor_job

    fit(extractor_job(tiny_cfg, output=str(tmp_path / "x.pt")), LocalHooks())
    fam = get_family("mae")
    model = fam.build(tiny_cfg.model)
    groups = {"retain": torch.rand(12, 3, 16, 16), "forget": torch.rand(12, 3, 16, 16)}
    ext = Extractor("raysweep-indomain", str(tmp_path / "x.pt"), "t")
    without, _ = evaluate(fam, model, groups, tiny_cfg.eval.task, ext, torch.device("cpu"))
    assert not any(k.endswith("/clip") for k in without)
    clip = load_clip(tiny_clip, None, torch.device("cpu"))
    with_clip, _ = evaluate(fam, model, groups, tiny_cfg.eval.task, ext, torch.device("cpu"), clip=clip)
    assert 0.0 < with_clip["retain/clip"] <= 1.0 and "forget/clip" in with_clip
    monkeypatch.setenv("RAYSWEEP_WEIGHTS", str(tmp_path / "nowhere"))
    assert load_clip(tiny_clip, None, torch.device("cpu")) is None


def test_an_explicit_missing_clip_file_fails_in_preflight_and_weights_key_the_score_cache(tiny_cfg, tiny_clip):
    from raysweep.metrics.clip import clip_label
    from raysweep.runner import preflight

    with pytest.raises(ConfigError, match="eval.clip_weights"):
        preflight(tiny_cfg.replace(**{"eval.clip_weights": "/no/such/file.bin"}))
    assert clip_label(tiny_clip).startswith("tiny-test:open_clip_tiny-test.bin:")
    assert clip_label("ViT-H-14") is None


def test_an_explicit_inception_choice_without_its_weights_fails_in_preflight(tiny_cfg, tmp_path, monkeypatch):
    from raysweep.runner import preflight

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no Inception weights there
    with pytest.raises(ConfigError, match="weights-inception-2015-12-05"):
        preflight(tiny_cfg.replace(**{"eval.extractor": "inception"}))
    preflight(tiny_cfg.replace(**{"eval.extractor": "auto"}))  # auto falls back to the in-domain extractor
