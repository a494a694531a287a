"""`raysweep evaluate`: any saved model scored against the original on the test or the validation images."""

import json

import pytest

from raysweep.cli import main
from raysweep.jobs import extractor_job, pretrain_job
from raysweep.pretrain import extractor_path, original_path
from raysweep.train import LocalHooks, fit


@pytest.fixture
def cached(tiny_cfg, tmp_path):
    """The tiny config's original and extractor, trained in-process where the cache expects them."""
    import yaml

    cfg = tiny_cfg.replace(**{"pretrain.epochs": 1})
    fit(pretrain_job(cfg, output=str(original_path(cfg))), LocalHooks())
    fit(extractor_job(cfg, output=str(extractor_path(cfg))), LocalHooks())
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(cfg.to_dict()))
    return cfg, p


@pytest.mark.parametrize("part", ["test", "val"])
def test_the_original_scored_as_a_checkpoint_has_ratio_one(cached, tmp_path, capsys, part):
    cfg, p = cached
    out = tmp_path / f"eval-{part}"
    code = main(
        [
            "evaluate",
            "--config",
            str(p),
            "--checkpoint",
            str(original_path(cfg)),
            "--out",
            str(out),
            f"eval.part={part}",
            f"eval.cross_validate={part == 'val'}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["eval_part"] == part and m["forget/fid_ratio"] == pytest.approx(1.0)
    # classifier-on-outputs for both models, identical here; never a CLIP key without CLIP weights
    for g in ("retain", "forget"):
        assert m[f"{g}/accuracy"] == m[f"original/{g}/accuracy"] and 0 <= m[f"{g}/accuracy"] <= 1
        assert m[f"{g}/indomain_cos"] == pytest.approx(m[f"original/{g}/indomain_cos"])
    assert not any("clip" in k for k in m)
    assert (out / "tsne.png").stat().st_size > 0  # App. Fig. 4 analogue
    assert m["retain/fid_ratio"] == pytest.approx(1.0) and (out / "samples.png").stat().st_size > 0
    n = cfg.data.test_images_per_class if part == "test" else cfg.data.val_images_per_class
    assert m["eval_images_per_group"] == {"retain": 2 * n, "forget": 2 * n}
    assert f"scored on the {part} images" in capsys.readouterr().out
    if part == "val":  # App. E.2: the original scored as the model under test equals its own reference
        for g in ("retain", "forget"):
            assert m[f"{g}/e2_fid"] == pytest.approx(m[f"original/{g}/e2_fid"])
    else:
        assert not any("e2_" in k for k in m)


def test_a_missing_checkpoint_is_one_message(cached, tmp_path, capsys):
    _, p = cached
    code = main(["evaluate", "--config", str(p), "--checkpoint", str(tmp_path / "nope.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.pt" in err and "Traceback" not in err


def test_eval_groups_score_the_configured_part(tiny_cfg):
    """``eval.part=val`` means validation images wherever images are scored (the sampling benchmark once scored the
    test images whatever the override said)."""
    import torch

    from raysweep.evaluate import eval_groups

    val, test = eval_groups(tiny_cfg.replace(**{"eval.part": "val"})), eval_groups(tiny_cfg)
    assert tiny_cfg.eval.part == "test" and len(val["retain"]) == 2 * 16 and len(test["retain"]) == 2 * 24
    assert torch.equal(eval_groups(tiny_cfg, "val")["forget"], val["forget"])
    flat = {tuple(x.flatten().tolist()) for x in test["retain"]}
    assert not any(tuple(x.flatten().tolist()) in flat for x in val["retain"])
