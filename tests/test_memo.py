"""The teacher memo (raysweep.unlearn.memo): trials that share the teacher's inputs read its outputs from disk, and
end at exactly the weights they would have reached computing them."""

from __future__ import annotations

import pytest
import torch

from raysweep.config import Config
from raysweep.jobs import RunSpec, unlearn_job
from raysweep.models import get_family
from raysweep.train import LocalHooks, fit
from raysweep.unlearn.memo import TeacherMemo
from tests.conftest import TINY_OPTIONS, tiny_dict


def _cfg(tmp_path, family: str) -> Config:
    d = tiny_dict(tmp_path)
    d["model"] = {"family": family, "preset": "tiny", "options": dict(TINY_OPTIONS[family])}
    d["unlearn"].update({"epochs": 1, "train_mask": "mixed"})
    return Config.from_dict(d)


def _run(cfg: Config, original: str, memo: str | None) -> tuple[dict, list[float]]:
    spec = RunSpec("unused", original, "-", None, "-", teacher_memo=memo, teacher_memo_gb=1.0 if memo else 0.0)
    job = unlearn_job(cfg, finish=lambda m, d: None, spec=spec)
    hits: list[float] = []
    fit(job, LocalHooks(), on_step=lambda s, v, w: hits.append(float(v.get("teacher_memo_hit", -1))))
    return {k: v.clone() for k, v in job.module.state_dict().items()}, hits


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", ["mae", "mage", "palette"])
def test_a_trial_reading_the_memo_ends_at_the_weights_it_would_compute(tmp_path, family):
    cfg = _cfg(tmp_path, family)
    original = tmp_path / "o.pt"
    torch.manual_seed(0)
    torch.save({"model": get_family(family).build(cfg.model).state_dict()}, original)
    memo = str(tmp_path / "memo")

    plain, none = _run(cfg, str(original), None)
    first, misses = _run(cfg, str(original), memo)
    assert set(none) == {-1.0} and set(misses) == {0.0}  # without a memo no hit metric; a new memo: all computed
    assert _same(plain, first)
    assert list((tmp_path / "memo").rglob("*.pt"))

    # another trial of the sweep: other alpha and lr, same seed and noise -> every teacher output is read
    other = cfg.replace(**{"unlearn.alpha": 2.0, "unlearn.lr": 2e-3})
    shared, hits = _run(other, str(original), memo)
    assert set(hits) == {1.0}
    alone, _ = _run(other, str(original), None)
    assert _same(shared, alone)
    assert not _same(shared, plain)  # the hyperparameters did change the run


def test_the_key_follows_the_teacher_and_the_inputs(tmp_path):
    cfg = _cfg(tmp_path, "mae")
    fam = get_family("mae")
    teacher = fam.build(cfg.model).eval()
    memo = TeacherMemo.open(tmp_path / "m", teacher, "mae", cfg.to_dict()["model"], 1.0)
    x = torch.rand(4, 3, 16, 16)
    calls = []

    def compute(images):
        calls.append(1)
        return fam.encode(teacher, images, {"mask": torch.zeros(4, 16, 16, dtype=torch.bool)})[0]

    a = memo(lambda: compute(x), x)
    b = memo(lambda: compute(x), x)
    assert torch.equal(a, b) and len(calls) == 1 and memo.hits == 1
    memo(lambda: compute(x + 1e-6), x + 1e-6)  # one ulp-scale change of the input: computed again
    assert len(calls) == 2
    # other weights -> another namespace: nothing of the first teacher is served
    with torch.no_grad():
        next(teacher.parameters()).add_(1e-3)
    other = TeacherMemo.open(tmp_path / "m", teacher, "mae", cfg.to_dict()["model"], 1.0)
    assert other.root != memo.root
    other(lambda: compute(x), x)
    assert other.hits == 0 and len(calls) == 3
    with pytest.raises(TypeError, match="cannot hash a object"):
        memo(lambda: x, x, object())


def test_the_memo_stops_writing_at_its_limit(tmp_path):
    teacher = torch.nn.Linear(2, 2)
    memo = TeacherMemo.open(tmp_path / "m", teacher, "mae", {}, 0.0)  # no room at all
    x = torch.rand(3, 2)
    memo(lambda: teacher(x), x)
    memo(lambda: teacher(x), x)
    assert memo.hits == 0 and memo.misses == 2 and not list((tmp_path / "m").rglob("*.pt"))
