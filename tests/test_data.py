import dataclasses
import gzip
import math

import numpy as np
import pytest
import torch

from raysweep.config import Config, DataConfig
from raysweep.data import datasets
from raysweep.data.datasets import DatasetNotFoundError, load_dataset, synthetic
from raysweep.data.splits import EmptySplitError, eval_split, pretrain_indices, proxy_classes, unlearn_split


def labels(n_classes=10, per=50):
    return torch.arange(n_classes).repeat_interleave(per)


def test_official_rule_real_retain_only():
    cfg = DataConfig(dataset="synthetic", forget_classes=[0, 1], retain_classes=[2, 3, 4], images_per_class=10)
    s = unlearn_split(labels(), cfg, 10)
    assert (s.n_forget, s.n_retain, s.n_proxy) == (20, 30, 0)
    # retain truncated to max(|proxy|, |forget|) = 20; forget tiled to max(|proxy|+|retain|, 2*10) = 20
    assert sum(s.is_forget) == 20 and len(s) - sum(s.is_forget) == 20
    lab = labels()
    assert all((int(lab[i]) in (0, 1)) == f for i, f in zip(s.indices, s.is_forget))
    # the cut keeps every retain class (the official code's cut of the class-ordered list would drop class 4)
    kept = [int(lab[i]) for i, f in zip(s.indices, s.is_forget) if not f]
    assert sorted(set(kept)) == [2, 3, 4] and max(map(kept.count, {2, 3, 4})) - min(map(kept.count, {2, 3, 4})) <= 1


@pytest.mark.parametrize("order", [[5, 6, 7, 8, 9], [9, 7, 5, 8, 6]])
def test_a_retain_ratio_above_one_keeps_every_retain_class(order):
    # retain_ratio 2 asks 2x the forget set; the official rule cuts real retain to |forget|: 10 of each class
    cfg = DataConfig(
        dataset="synthetic", forget_classes=[0, 1, 2, 3, 4], retain_classes=order, images_per_class=10, retain_ratio=2
    )
    s = unlearn_split(labels(), cfg, 10)
    lab = labels()
    kept = [i for i, f in zip(s.indices, s.is_forget) if not f]
    assert s.n_retain == 100 and len(kept) == 50
    assert {c: sum(int(lab[i]) == c for i in kept) for c in order} == {c: 10 for c in order}
    assert len(set(kept)) == 50  # distinct images, the first 10 of each class's pretraining pool
    no_cut = unlearn_split(labels(), dataclasses.replace(cfg, retain_ratio=1.0), 10)
    assert set(kept) == {i for i, f in zip(no_cut.indices, no_cut.is_forget) if not f}


def test_official_rule_with_proxy_oversamples_forget():
    cfg = DataConfig(
        dataset="synthetic", forget_classes=[0, 1], retain_classes=[2, 3], images_per_class=10, proxy_ratio=1.0
    )
    s = unlearn_split(labels(), cfg, 10)
    pcs = proxy_classes(cfg, 10)
    assert pcs == [4, 5, 6, 7, 8, 9]
    assert s.n_proxy == len(pcs) * math.ceil(1.0 * 2 * 10 / len(pcs))
    # retain -> max(|proxy|, |forget|); forget -> max(|proxy| + |retain|, 20): forget is oversampled
    n_ret = max(s.n_proxy, 20)
    assert sum(s.is_forget) == s.n_proxy + n_ret
    assert len(s) == sum(s.is_forget) + n_ret + s.n_proxy


def test_proxy_only_and_retain_ratio():
    cfg = DataConfig(
        dataset="synthetic",
        forget_classes=[0],
        retain_classes=[1],
        images_per_class=10,
        retain_ratio=0.0,
        proxy_ratio=0.5,
    )
    s = unlearn_split(labels(), cfg, 10)
    assert s.n_retain == 0 and s.n_proxy > 0
    cfg = DataConfig(
        dataset="synthetic",
        forget_classes=[0],
        retain_classes=[1],
        images_per_class=10,
        retain_ratio=0.5,
        oversample=False,
    )
    s = unlearn_split(labels(), cfg, 10)
    assert (s.n_forget, s.n_retain) == (10, 5) and len(s) == 15


def test_empty_split_errors():
    cfg = DataConfig(dataset="synthetic", forget_classes=[0], retain_classes=[1], images_per_class=5)
    lab = torch.zeros(20, dtype=torch.long)  # class 1 has no image
    with pytest.raises(EmptySplitError, match="class 1 .*retain.* no images"):
        unlearn_split(lab, cfg, 2)
    cfg = DataConfig(
        dataset="synthetic",
        forget_classes=[0, 1],
        retain_classes=[],
        images_per_class=5,
        retain_ratio=0.0,
        proxy_ratio=1.0,
    )
    with pytest.raises(EmptySplitError, match="no proxy class"):
        unlearn_split(labels(2), cfg, 2)
    with pytest.raises(EmptySplitError, match="retain_classes is empty"):
        eval_split(labels(2), cfg)


def test_eval_split_groups_are_disjoint_and_sized():
    cfg = DataConfig(
        dataset="synthetic", forget_classes=[0, 1], retain_classes=[2], test_images_per_class=7, val_images_per_class=5
    )
    e = eval_split(labels(), cfg)
    lab = labels()
    assert len(e.forget) == 14 and len(e.retain) == 7
    assert {int(lab[i]) for i in e.forget} == {0, 1} and {int(lab[i]) for i in e.retain} == {2}
    v = eval_split(labels(), cfg, "val")
    assert len(v.forget) == 10 and len(v.retain) == 5
    assert not set(v.forget + v.retain) & set(e.forget + e.retain)  # validation never overlaps test
    with pytest.raises(EmptySplitError, match="val_images_per_class"):
        eval_split(
            labels(),
            DataConfig(
                dataset="synthetic",
                forget_classes=[0],
                retain_classes=[2],
                test_images_per_class=40,
                val_images_per_class=40,
            ),
        )


@pytest.mark.parametrize("forget,retain", [([0, 1, 2], [3, 4, 5]), ([5, 3, 1], [0, 2, 4]), ([4, 0], [5, 2])])
def test_unlearning_images_were_all_seen_in_pretraining(forget, retain):
    """Forget, retain and proxy images always lie inside the original's training set, for any class lists in any
    order (the paper unlearns data the original was trained on), and a class gets the same images whatever the
    lists."""
    lab = labels(6, 50)
    cfg = DataConfig(
        dataset="synthetic",
        num_classes=6,
        forget_classes=forget,
        retain_classes=retain,
        images_per_class=10,
        pretrain_images_per_class=20,
        proxy_ratio=0.5 if len(forget) < 3 else 0,
    )
    pre = set(pretrain_indices(lab, cfg, 6))
    assert len(pre) == 6 * 20
    s = unlearn_split(lab, cfg, 6)
    assert set(s.indices) <= pre
    other = DataConfig(
        dataset="synthetic",
        num_classes=6,
        forget_classes=list(reversed(retain)),
        retain_classes=list(reversed(forget)),
        images_per_class=10,
        pretrain_images_per_class=20,
    )
    assert pretrain_indices(lab, other, 6) == sorted(pre)
    mine = {i for i, f in zip(s.indices, s.is_forget) if f}
    theirs = {i for i, f in zip(unlearn_split(lab, other, 6).indices, unlearn_split(lab, other, 6).is_forget) if not f}
    assert mine <= theirs  # the forget classes' images are the same when they are retain classes


def test_held_out_images_do_not_depend_on_the_training_image_settings():
    """The original's cached scores are keyed without runner.UNLEARN_SET_FIELDS: sound only while the held-out
    images ignore them."""
    from raysweep.runner import UNLEARN_SET_FIELDS

    base = DataConfig(
        dataset="synthetic",
        forget_classes=[0, 1],
        retain_classes=[2, 3],
        test_images_per_class=7,
        val_images_per_class=5,
    )
    changed = {
        "images_per_class": 3,
        "retain_ratio": 2.5,
        "proxy_ratio": 1.0,
        "oversample": False,
        "pretrain_images_per_class": 4,
    }
    assert set(changed) == set(UNLEARN_SET_FIELDS)
    for part in ("test", "val"):
        want = eval_split(labels(), base, part)
        for key, value in changed.items():
            assert eval_split(labels(), dataclasses.replace(base, **{key: value}), part) == want, key


def test_class_out_of_range_names_valid_range():
    cfg = DataConfig(dataset="synthetic", num_classes=4, forget_classes=[0], retain_classes=[7])
    with pytest.raises(ValueError, match=r"out of range.*valid ids are 0\.\.3"):
        load_dataset(cfg, train=True)


def test_synthetic_dataset_items():
    ds = synthetic(True, 16, 3, per_class=4)
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert len(ds) == 12 and ds.num_classes == 3


def _write_idx(path, arr, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_fmnist(tmp_path):
    """The four Fashion-MNIST idx.gz files, tiny (30 train / 20 test images)."""
    src = tmp_path / "fm"
    src.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("t10k", 20)):
        _write_idx(src / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)), 2051)
        _write_idx(src / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10, 2049)
    return src


def test_fashion_mnist_from_raysweep_data(tmp_path, monkeypatch):
    src = _fake_fmnist(tmp_path)
    monkeypatch.setenv("RAYSWEEP_DATA", str(src))
    monkeypatch.setattr(datasets, "FMNIST_DEBIAN_DIR", tmp_path / "absent")
    ds = datasets.fashion_mnist(train=True, size=32)
    assert len(ds) == 30 and ds[0][0].shape == (3, 32, 32) and ds.num_classes == 10
    assert len(datasets.fashion_mnist(train=False, size=32)) == 20


def test_fashion_mnist_not_found_names_all_three_places(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYSWEEP_DATA", raising=False)
    monkeypatch.setattr(datasets, "FMNIST_DEBIAN_DIR", tmp_path / "absent")

    class Offline:
        def __init__(self, *a, **k):
            raise RuntimeError("no internet")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", Offline)
    with pytest.raises(DatasetNotFoundError) as e:
        datasets.fashion_mnist(train=True, size=32)
    msg = str(e.value)
    assert "RAYSWEEP_DATA" in msg and "dataset-fashion-mnist" in msg and "download" in msg


def test_an_empty_raysweep_data_folder_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("RAYSWEEP_DATA", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError, match="RAYSWEEP_DATA=.*does not hold.*unset RAYSWEEP_DATA"):
        datasets.fashion_mnist(train=True, size=32)  # the Debian files exist on this machine: not used


def _cache_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["truncated_gzip", "truncated_data", "wrong_magic", "count_mismatch"])
def test_a_bad_source_never_reaches_the_cache(tmp_path, monkeypatch, damage):
    src = _fake_fmnist(tmp_path)
    f = src / "train-images-idx3-ubyte.gz"
    if damage == "truncated_gzip":
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    elif damage == "truncated_data":
        _write_idx(f, np.zeros((30, 28, 28)), 2051)
        with gzip.open(f, "rb") as g:
            blob = g.read()
        with gzip.open(f, "wb") as g:
            g.write(blob[:1000])
    elif damage == "wrong_magic":
        _write_idx(f, np.zeros((30, 28, 28)), 1234)
    else:
        _write_idx(f, np.zeros((29, 28, 28)), 2051)
    monkeypatch.setenv("RAYSWEEP_DATA", str(src))
    with pytest.raises(DatasetNotFoundError) as e:
        datasets.fashion_mnist(train=True, size=32)
    assert "train-images" in str(e.value) or "disagree" in str(e.value)
    assert not [n for n in _cache_files(tmp_path) if "ubyte" in n]  # nothing staged, no *.tmp left
    # the error does not repeat once the source is fixed (the cache was not poisoned)
    (tmp_path / "good").mkdir()
    fixed = _fake_fmnist(tmp_path / "good")
    monkeypatch.setenv("RAYSWEEP_DATA", str(fixed))
    assert len(datasets.fashion_mnist(train=True, size=32)) == 30


def test_a_damaged_staged_file_is_staged_again(tmp_path, monkeypatch):
    src = _fake_fmnist(tmp_path)
    monkeypatch.setenv("RAYSWEEP_DATA", str(src))
    datasets.fashion_mnist(train=True, size=32)
    staged = next((tmp_path / "cache").rglob("train-labels-idx1-ubyte"))
    staged.write_bytes(staged.read_bytes()[:20])
    assert len(datasets.fashion_mnist(train=True, size=32)) == 30


def test_image_folder_layout(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for name in ("n01", "n02"):
            d = tmp_path / split / name
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((40, 50, 3), 40 * i, np.uint8)).save(d / f"{i}.JPEG")
    cfg = DataConfig(
        dataset="image_folder",
        root=str(tmp_path),
        class_names=["n02", "n01"],
        image_size=32,
        forget_classes=[0],
        retain_classes=[1],
    )
    ds = load_dataset(cfg, train=False)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 0 and len(ds) == 6
    raw, y_raw = ds.training_view()[0]  # decoded to uint8 in the loader's workers, converted on the device
    assert raw.dtype == torch.uint8 and y_raw == y and torch.equal(raw.float() / 255, x)
    bad = DataConfig(
        dataset="image_folder", root=str(tmp_path / "missing"), class_names=["a"], forget_classes=[0], retain_classes=[]
    )
    with pytest.raises(DatasetNotFoundError, match="train/ and val/"):
        load_dataset(bad, train=True)


def test_image_folder_needs_root():
    with pytest.raises(ValueError, match="data.root"):
        Config.from_dict({"data": {"dataset": "image_folder"}})


def test_concurrent_staging_does_not_collide(tmp_path, monkeypatch):
    """Two Ray workers stage a cold cache at once (seen in a cold-cache sweep): both must succeed."""
    import multiprocessing as mp

    src = _fake_fmnist(tmp_path)
    monkeypatch.setenv("RAYSWEEP_DATA", str(src))
    ctx = mp.get_context("spawn")  # fork after torch initialised its thread pool can deadlock
    procs = [ctx.Process(target=datasets.fashion_mnist, args=(True, 32)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)


def test_image_folders_take_any_case_of_extension_and_a_bad_file_fails_in_preflight(tmp_path):
    from PIL import Image

    from raysweep.runner import preflight
    from tests.conftest import tiny_dict

    for split in ("train", "val"):
        for name in ("a", "b"):
            d = tmp_path / "data" / split / name
            d.mkdir(parents=True)
            for i, ext in enumerate((".JPG", ".png", ".PNG", ".jpeg")):
                Image.fromarray(np.full((20, 20, 3), 50 * i, np.uint8)).save(d / f"{i}{ext}", format="PNG")
    d = tiny_dict(tmp_path)
    d["data"] = {
        "dataset": "image_folder",
        "root": str(tmp_path / "data"),
        "class_names": ["a", "b"],
        "image_size": 16,
        "forget_classes": [0],
        "retain_classes": [1],
        "images_per_class": 2,
        "test_images_per_class": 1,
        "val_images_per_class": 1,
        "pretrain_images_per_class": 4,
    }
    cfg = Config.from_dict(d)
    assert len(load_dataset(cfg.data, train=True)) == 8  # .JPG / .PNG count
    preflight(cfg)
    (tmp_path / "data" / "val" / "b" / "9.jpg").write_text("not an image")
    with pytest.raises(DatasetNotFoundError, match=r"9\.jpg.*not a readable image"):
        preflight(cfg)
