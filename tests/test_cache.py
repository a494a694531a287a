"""Versioned caches: a producer's code cannot change without its recorded fingerprint (and, if behaviour changed, its
version) being updated; cache keys follow versions, seeds, workers and the dataset's content."""

import sys
import textwrap

import pytest

from raysweep import cache
from raysweep.cache import PRODUCERS, fingerprint


@pytest.mark.parametrize("name", sorted(PRODUCERS))
def test_producer_code_matches_its_recorded_fingerprint(name):
    p = PRODUCERS[name]
    now = fingerprint(p.sources)
    assert now == p.fingerprint, (
        f"the code of cache producer {name!r} changed (fingerprint {now}, recorded {p.fingerprint}). If what it "
        f"writes changes, bump its version in raysweep/cache.py (now {p.version}) so stale caches are not reused; "
        f"then record fingerprint {now!r}."
    )


def _fingerprint_of(tmp_path, monkeypatch, version, body):
    """The fingerprint of ``fp_mod:f`` when fp_mod.py holds ``body`` (one folder per version)."""
    d = tmp_path / version
    d.mkdir()
    (d / "fp_mod.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(d))
    sys.modules.pop("fp_mod", None)
    return fingerprint(("fp_mod:f",))


def test_fingerprint_ignores_comments_and_docstrings_but_not_code(tmp_path, monkeypatch):
    a = _fingerprint_of(tmp_path, monkeypatch, "a", "def f(x):\n    return x + 1\n")
    b = _fingerprint_of(
        tmp_path, monkeypatch, "b", 'def f(x):\n    """Adds one."""\n    # a comment\n    return (x +\n            1)\n'
    )
    c = _fingerprint_of(tmp_path, monkeypatch, "c", "def f(x):\n    return x + 2\n")
    sys.modules.pop("fp_mod", None)
    assert a == b != c


def test_key_follows_the_producer_version(monkeypatch):
    k1 = cache.key("extractor", {"a": 1})
    monkeypatch.setitem(
        PRODUCERS,
        "extractor",
        PRODUCERS["extractor"].__class__(
            PRODUCERS["extractor"].version + 1, PRODUCERS["extractor"].sources, PRODUCERS["extractor"].fingerprint
        ),
    )
    assert cache.key("extractor", {"a": 1}) != k1


def test_original_key_covers_seed_workers_and_dataset_content(tiny_cfg, monkeypatch):
    from raysweep.pretrain import extractor_key, original_key

    base = original_key(tiny_cfg)
    assert original_key(tiny_cfg.replace(**{"pretrain.seed": 1})) != base
    assert original_key(tiny_cfg.replace(**{"resources.num_workers": 1})) != base
    assert original_key(tiny_cfg.replace(**{"unlearn.alpha": 0.9})) == base  # unlearning-only settings
    assert original_key(tiny_cfg.replace(**{"pretrain.quality_gate": False})) == base
    ext = extractor_key(tiny_cfg)
    assert extractor_key(tiny_cfg.replace(**{"pretrain.seed": 1})) == ext  # the extractor is shared
    import raysweep.data.datasets as ds

    monkeypatch.setattr(ds, "dataset_fingerprint", lambda cfg: "other-content")
    assert original_key(tiny_cfg) != base and extractor_key(tiny_cfg) != ext


def test_original_scores_key_ignores_training_only_options_but_not_sampling(tmp_path, monkeypatch):
    """The original's cached scores: an option that changes only how unlearning trains (Palette's
    frozen_input_blocks, unlearn_t_max, forget_context) reuses them; the sampler, the eval task, the original's
    content and the extractor do not."""
    from raysweep.config import load_config
    from raysweep.pretrain import Models
    from raysweep.runner import run_spec

    weights = tmp_path / "original.pt"
    weights.write_bytes(b"weights")
    models = Models(original=weights, extractor=tmp_path / "ext.pt", extractor_label="ext-1", quality=None, seconds={})
    cfg = load_config("palette_fmnist", [])

    def scores(overrides, m=models):
        return run_spec(cfg.replace(**overrides), tmp_path / "run", m).original_cache

    base = scores({})
    for name, value in (
        ("frozen_input_blocks", 0),
        ("unlearn_t_max", 0.5),
        ("forget_context", "noise"),
        ("forget_t_max", 0.5),
    ):
        assert scores({f"model.options.{name}": value}) == base, name
    assert scores({"unlearn.alpha": 0.3}) == base
    for key, value in (
        ("images_per_class", 10),
        ("retain_ratio", 2.0),
        ("proxy_ratio", 0.5),
        ("oversample", False),
        ("pretrain_images_per_class", 100),
    ):  # training images only: the held-out images (and the original's weights, hashed) decide the scores
        assert scores({f"data.{key}": value}) == base, key
    assert scores({"data.test_images_per_class": 100}) != base
    assert scores({"data.forget_classes": [0, 1], "data.retain_classes": [5]}) != base
    assert scores({"model.options.sample_steps": 10}) != base
    assert scores({"eval.task.ratio": 0.25}) != base
    assert scores({}, Models(**{**models.__dict__, "extractor_label": "ext-2"})) != base
    weights.write_bytes(b"other weights")
    assert scores({}) != base
    weights.write_bytes(b"weights")
    assert scores({}) == base
    import raysweep.data.datasets as ds

    monkeypatch.setattr(ds, "dataset_fingerprint", lambda cfg: "other-content")  # edited held-out files
    assert scores({}) != base
