"""End to end through Ray Train (2 DDP workers at 0.5 CPU): pretrain, extractor, unlearn, evaluate, outputs."""

import json

import pytest
import torch
import yaml

from raysweep.cli import main
from raysweep.config import Config
from raysweep.evaluate import GRID_FILE, METRICS_FILE, MODEL_FILE
from raysweep.models import get_family
from raysweep.pretrain import original_path
from raysweep.runner import run_dir_for
from tests.conftest import TINY_OPTIONS, tiny_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    import os

    import ray

    cache = tmp_path_factory.mktemp("ray-cache")
    os.environ["RAYSWEEP_CACHE"] = str(cache)  # before ray.init: the workers inherit it
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"RAYSWEEP_CACHE": str(cache)}},
    )
    yield cache
    ray.shutdown()


@pytest.mark.parametrize("family", ["mae", "mage"])
def test_unlearn_cli_end_to_end(family, ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(ray_session))
    d = tiny_dict(tmp_path)
    d["model"] = {"family": family, "preset": "tiny", "options": dict(TINY_OPTIONS[family])}
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    assert main(["unlearn", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "forget FID" in out and "extractor: raysweep-indomain" in out
    cfg = Config.from_dict(d)
    runs = list((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 1
    m = json.loads((runs[0] / METRICS_FILE).read_text())
    for k in ("retain/fid", "forget/fid", "retain/is", "forget/is"):
        assert isinstance(m[k], float) and isinstance(m["original/" + k], float)
    assert m["extractor"].startswith("raysweep-indomain") and m["task"] == "center:0.5"
    assert (runs[0] / GRID_FILE).stat().st_size > 0
    # only the encoder moved: every decoder tensor of the unlearned model equals the original's
    fam = get_family(family)
    orig = torch.load(original_path(cfg), weights_only=True)["model"]
    new = torch.load(runs[0] / MODEL_FILE, weights_only=True)["model"]
    model = fam.build(cfg.model)
    enc = {id(q) for q in fam.encoder_parameters(model)}
    dec_names = [n for n, q in model.named_parameters() if id(q) not in enc]
    assert dec_names and all(torch.equal(orig[n], new[n]) for n in dec_names)
    assert any(not torch.equal(orig[n], new[n]) for n in ("blocks.0.attn.qkv.weight", "norm.weight"))
    # a finished run is never overwritten: the next run of the same config gets a new folder
    assert run_dir_for(cfg) == runs[0].parent / f"{runs[0].name}-r2"


def test_original_and_extractor_are_bit_identical_from_two_empty_caches(ray_session, tmp_path, monkeypatch):
    """Determinism (same platform, same thread count): the same config and seed pretrain bit-identical weights
    through Ray Train, from two empty caches — the same files too (``original_sha256``), even when the two runs'
    unlearning settings differ; a different pretrain.seed gives a different original."""
    from raysweep.models.checkpoints import sha256
    from raysweep.pretrain import ensure_extractor, ensure_original

    cfg = Config.from_dict(tiny_dict(tmp_path)).replace(**{"pretrain.epochs": 1})
    unlearning_only = {"unlearn.alpha": 0.9, "unlearn.optimizer": "adamw", "seed": 5}
    files = []
    for name, c in (("a", cfg), ("b", cfg.replace(**unlearning_only))):
        monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / name))  # the driver picks every path
        files.append((ensure_original(c), ensure_extractor(c)))
    (oa, ea), (ob, eb) = files
    assert oa != ob and oa.name == ob.name
    for x, y in ((oa, ob), (ea, eb)):
        sa, sb = torch.load(x, weights_only=True)["model"], torch.load(y, weights_only=True)["model"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert sha256(ea) == sha256(eb) and sha256(oa) == sha256(ob)
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "c"))
    other = ensure_original(cfg.replace(**{"pretrain.seed": 1}))
    so, s0 = (torch.load(p, weights_only=True)["model"] for p in (other, oa))
    assert other.name != oa.name and not torch.equal(so["blocks.0.attn.qkv.weight"], s0["blocks.0.attn.qkv.weight"])


def test_a_run_that_died_in_evaluation_reruns_only_the_evaluation(ray_session, tmp_path, monkeypatch, capsys):
    """The unlearned weights are written before evaluation starts; rerunning the same command after a crash in
    evaluation (state: weights and Train checkpoints, no metrics.json) trains no epoch and only evaluates."""
    monkeypatch.setenv("RAYSWEEP_CACHE", str(ray_session))
    d = tiny_dict(tmp_path)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    assert main(["unlearn", "--config", str(p)]) == 0
    capsys.readouterr()
    (run,) = list((tmp_path / "results" / "runs").iterdir())
    first = json.loads((run / METRICS_FILE).read_text())
    (run / METRICS_FILE).unlink()  # as if evaluation had died after the weights were saved
    checkpoints = sorted(c.name for c in run.rglob("checkpoint_*") if c.is_dir())
    assert checkpoints and (run / MODEL_FILE).is_file()
    assert main(["unlearn", "--config", str(p)]) == 0
    assert "run folder: " + str(run) in capsys.readouterr().out  # the same folder, finished now
    assert sorted(c.name for c in run.rglob("checkpoint_*") if c.is_dir()) == checkpoints  # no epoch trained
    again = json.loads((run / METRICS_FILE).read_text())
    assert again["unlearned_sha256"] == first["unlearned_sha256"]
    assert again["retain/fid"] == pytest.approx(first["retain/fid"]) and again["seconds"]["train"] < 60
