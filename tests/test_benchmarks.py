"""The benchmarks' machinery runs (tiny presets on the CPU), so that a GPU session only has to press the button."""

import json
import math

import pytest
import torch

from raysweep.models import get_family
from raysweep.models.checkpoints import save_atomic


@pytest.mark.parametrize("name", ["mae", "palette"])
def test_gpu_benchmark_runs_the_real_loop_and_counts_flops(name, tmp_path, monkeypatch):
    import benchmarks.gpu as g

    monkeypatch.setattr(g, "DEVICE", "cpu")
    monkeypatch.setattr(g, "LOADER_WORKERS", 0)
    monkeypatch.setattr(g, "MODELS", {"mae": ("mae", "tiny", 32, 8), "palette": ("palette", "tiny", 32, 4)})
    family, preset, size, batch = g.MODELS[name]
    cfg = g.bench_config(family, preset, size, batch)
    original = str(tmp_path / "o.pt")
    torch.manual_seed(0)
    save_atomic({"model": get_family(family).build(cfg.model).state_dict()}, original)
    r = g.run_variant(name, "fp32", steps=2, warmup=1, peak=1.0, original=original)
    assert r.img_s > 0 and 0.0 <= r.data_wait <= 1.0 and math.isnan(r.peak_gib)
    # FLOPs of a step: at least the student's forward + backward over the batch (x3 one forward)
    assert r.tflops > 0 and r.mfu == r.tflops
    s = g.sampling_rate(name, False, original, reps=1)
    assert all(v > 0 for v in s.values())


def test_gpu_benchmark_refuses_to_run_without_cuda(capsys, monkeypatch):
    import benchmarks.gpu as g

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert g.main([]) == 2
    assert "needs a CUDA device" in capsys.readouterr().out


def test_sampling_benchmark_compares_samplers_with_a_locally_trained_original(tmp_path, capsys):
    """benchmarks/sampling.py end to end on a tiny Palette, trained in-process (resources.runtime=local: no Ray)."""
    import yaml

    from benchmarks.sampling import main
    from tests.conftest import TINY_PALETTE, tiny_dict

    d = tiny_dict(tmp_path)
    d["model"] = {"family": "palette", "preset": "tiny", "options": dict(TINY_PALETTE)}
    d["resources"]["runtime"] = "local"
    path = tmp_path / "palette.yaml"
    path.write_text(yaml.safe_dump(d))
    out_json = tmp_path / "s.json"
    argv = ["--config", str(path), "--images", "6", "--samplers", "ddpm", "ddim:3", "dpmpp2m_sde:3", "eval.part=val"]
    assert main([*argv, "--json", str(out_json)]) == 0  # the override after --samplers is not taken for a sampler
    out = json.loads(out_json.read_text())
    assert set(out["rows"]) == {"ddpm-100", "ddim-3", "dpmpp2m_sde-3"} and out["eval_part"] == "val"
    assert all(math.isfinite(r["retain"]) and r["s_per_image"] > 0 for r in out["rows"].values())
    printed = capsys.readouterr().out
    assert "| dpmpp2m_sde-3 |" in printed and "val images" in printed


def test_eval_cache_benchmark_times_an_empty_and_a_filled_reference_cache(tmp_path, capsys, monkeypatch):
    import yaml

    from benchmarks.eval_cache import main
    from tests.conftest import tiny_dict

    d = tiny_dict(tmp_path)
    d["resources"]["runtime"] = "local"
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "empty reference cache" in out and "ratio filled / empty" in out


def _run_of_the_original(tmp_path, d: dict):
    """A run folder for config dict ``d`` (local runtime) whose 'unlearned' weights are the original's: the
    benchmarks that compare a run with its original must see nothing moved. Returns (folder, config, original)."""
    import yaml

    from raysweep.config import load_config
    from raysweep.models.checkpoints import read_state_dict
    from raysweep.pretrain import ensure_original

    d["resources"]["runtime"] = "local"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(d))
    cfg = load_config(str(run / "config.yaml"))
    original = str(ensure_original(cfg))
    torch.save({"model": read_state_dict(original, key="model")}, run / "unlearned.pt")
    return run, cfg, original


def test_per_class_benchmark_sees_which_classes_moved(tmp_path, capsys):
    """benchmarks/per_class.py on a run folder whose 'unlearned' weights are the original's (nothing moved) and
    then the original's with a perturbed encoder (every class moved): Eq. 10's ratios must tell the two apart."""
    from benchmarks.per_class import main
    from raysweep.jobs import load_original
    from tests.conftest import tiny_dict

    run, cfg, original = _run_of_the_original(tmp_path, tiny_dict(tmp_path))
    out_json = tmp_path / "same.json"
    assert main([str(run), "--images", "8", "--json", str(out_json)]) == 0
    same = json.loads(out_json.read_text())["rows"]
    assert set(same) == {"0", "1", "2", "3"} and {r["group"] for r in same.values()} == {"retain", "forget"}
    for r in same.values():
        assert r["moved"] == 0.0 and abs(r["target"] - 1.0) < 1e-6 and abs(r["fid_ratio"] - 1.0) < 1e-6

    model = load_original(cfg, original)
    family = get_family(cfg.model.family)
    with torch.no_grad():
        for p in family.encoder_parameters(model):
            p.add_(0.5 * torch.randn_like(p))
    torch.save({"model": model.state_dict()}, run / "unlearned.pt")
    assert main([str(run), "--images", "8", "--json", str(out_json)]) == 0
    moved = json.loads(out_json.read_text())["rows"]
    assert all(r["moved"] > 0.01 and r["target"] != same[c]["target"] for c, r in moved.items())
    printed = capsys.readouterr().out
    assert "| class | group |" in printed and "val" in printed


def test_per_class_benchmark_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from benchmarks.per_class import main

    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "not a finished run folder" in capsys.readouterr().err


def test_reproduce_block_gives_each_cell_its_mean_and_interval_over_unlearning_seeds(tmp_path):
    from benchmarks.reproduce import write_block

    def met(r, f):
        return {
            "original/retain/fid": 10.0,
            "retain/fid": 10.0 * r,
            "original/forget/fid": 5.0,
            "forget/fid": 5.0 * f,
            "retain/fid_ratio": r,
            "forget/fid_ratio": f,
            "extractor": "x",
            "seconds": {"train": 1.0},
        }

    rows = [
        ("mae", 0, "default", 0, met(1.0, 2.0), 60.0),
        ("mae", 0, "default", 1, met(1.1, 3.0), 60.0),
        ("mae", 0, "evens", 0, {"failed": "exit 1: boom"}, 5.0),
    ]
    text = write_block(tmp_path / "r.md", ["head"], rows, ["mae"], [])
    assert "| mae | 0 | default | 1 | 10.00 → 11.00 | 5.00 → 15.00 | 1.10 | **3.00** |" in text
    assert "| mae | 0 | evens | 0 | failed: exit 1: boom |" in text
    # two runs of the default cell: mean and Student's t half-width (t(0.975, 1) = 12.706, sd / sqrt(2) = 0.5)
    assert "| mae | 0 | default | 2 | 1.05 ± 0.64 | **2.5 ± 6.4** |" in text
    assert "- mae: 2 runs, forget × 2.00–3.00" in text
    single = write_block(tmp_path / "s.md", ["head"], rows[:1], ["mae"], [])
    assert "Over the unlearning seeds" not in single  # one run per cell: no interval table
    assert "- mae: 1 run, forget" in single


def test_reproduce_blocks_in_one_folder_keep_their_own_pictures(tmp_path):
    """Two reproductions written next to each other (docs/repro/) must not overwrite each other's picture of the
    original: each block's picture is named after its Markdown file."""
    from benchmarks.reproduce import write_block

    for name, colour in (("old", b"old picture"), ("new", b"new picture")):
        pic = tmp_path / f"{name}-src.png"
        pic.write_bytes(colour)
        text = write_block(tmp_path / "repro" / f"{name}.md", ["head"], [], ["mae"], [("mae", 0, pic)])
        assert f'<img src="{name}-mae-seed0-original.png"' in text
    assert (tmp_path / "repro" / "old-mae-seed0-original.png").read_bytes() == b"old picture"
    assert (tmp_path / "repro" / "new-mae-seed0-original.png").read_bytes() == b"new picture"


def test_palette_levels_benchmark_finds_where_the_encoder_moved(tmp_path, capsys):
    """benchmarks/palette_levels.py: an 'unlearned' file equal to the original moves no map and no FID at any
    noise level; a perturbed encoder past the frozen blocks moves those maps only; a MAE run is refused."""
    import yaml

    from benchmarks.palette_levels import main
    from raysweep.jobs import load_original
    from tests.conftest import TINY_PALETTE, tiny_dict

    d = tiny_dict(tmp_path)
    d["model"] = {"family": "palette", "preset": "tiny", "options": {**TINY_PALETTE, "frozen_input_blocks": 2}}
    run, cfg, original = _run_of_the_original(tmp_path, d)
    out = tmp_path / "same.json"
    assert main([str(run), "--images", "8", "--levels", "0.5", "--json", str(out)]) == 0
    same = json.loads(out.read_text())
    assert same["maps"] and all(abs(t - 1.0) < 1e-6 for r in same["maps"] for t in r["target"])
    assert all(abs(sum(r["share"]) - 1.0) < 1e-6 for r in same["maps"])
    fids = same["fid"]
    assert set(fids) == {"original", "unlearned", "unlearned below 0.5", "unlearned from 0.5"}
    assert all(f == fids["original"] for f in fids.values())  # the same weights at every level: the same samples

    model = load_original(cfg, original)
    with torch.no_grad():
        for p in get_family("palette").encoder_parameters(model):
            p.add_(0.5 * torch.randn_like(p))
    torch.save({"model": model.state_dict()}, run / "unlearned.pt")
    assert main([str(run), "--images", "8", "--levels", "0.5", "--json", str(out)]) == 0
    moved = json.loads(out.read_text())
    for r in moved["maps"]:
        assert all(abs(t - 1.0) < 1e-6 for t in r["target"][:2])  # the frozen blocks' maps cannot move
        assert any(abs(t - 1.0) > 1e-3 for t in r["target"][2:])
    assert moved["fid"]["unlearned"] != moved["fid"]["original"]
    assert "| denoiser | retain FID |" in capsys.readouterr().out

    mae_run = tmp_path / "mae"
    mae_run.mkdir()
    (mae_run / "config.yaml").write_text(yaml.safe_dump(tiny_dict(tmp_path)))
    (mae_run / "unlearned.pt").write_bytes(b"")
    with pytest.raises(SystemExit):
        main([str(mae_run)])
    assert "this diagnosis is for Palette" in capsys.readouterr().err


def test_step_flops_splits_an_eq10_step_into_student_teacher_and_backward(capsys):
    """benchmarks/step_flops.py: both mask kinds of a mixed step; the teacher's forward costs what the student's does
    (same encoder, same masks) and the backward about twice that; the task hole keeps more tokens than MAE's masks."""
    from benchmarks.step_flops import main, measure
    from raysweep.config import load_config

    rows = {r.kind: r for r in measure(load_config("mae_fmnist", []), batch=4)}
    assert set(rows) == {"random", "task"}
    for r in rows.values():
        assert r.student > 0 and r.teacher == pytest.approx(r.student, rel=1e-6)
        assert 1.5 < (r.total - r.student - r.teacher) / r.student < 2.5
    assert rows["task"].total > 2 * rows["random"].total
    assert main(["--batch", "2", "unlearn.method=max_loss"]) == 0
    out = capsys.readouterr().out
    assert "method max_loss" in out and "random masks" in out and "teacher" not in out


def test_reproduce_refuses_bad_arguments_before_any_work(tmp_path, capsys):
    from benchmarks.reproduce import main

    with pytest.raises(SystemExit) as e:
        main(["--seeds", "0,x", "--keep", str(tmp_path / "k")])
    assert e.value.code == 2 and "not a comma-separated list of integers" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown families / splits"):
        main(["--families", "mae,nope", "--keep", str(tmp_path / "k")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(SystemExit, match="is not empty"):
        main(["--keep", str(tmp_path / "full")])
    assert not (tmp_path / "k").exists()


def test_mage_tokens_measures_how_far_the_filled_context_is_from_the_whole_image(tmp_path, capsys):
    """benchmarks/mage_tokens.py: the evaluated center hole of 1/2 masks 36 of 64 tokens at 32 px; the share of
    visible tokens that the fill changes is a fraction, nonzero for a VQ-GAN whose receptive field passes the margin,
    and zero when the 'fill' is the image itself. Bad input: another family's config, a missing original."""
    from benchmarks.mage_tokens import context_mismatch, main
    from raysweep.config import TaskConfig
    from tests.test_mage import tiny

    m = tiny(img_size=32).eval()
    x = torch.rand(8, 3, 32, 32)
    r = context_mismatch(m, x, TaskConfig("center", 0.5))
    assert r["masked_tokens"] == 36.0 and r["tokens"] == 64 and 0.0 < r["visible_changed"] <= 1.0
    flat = torch.full_like(x, 0.5)
    m.pixel_mean = (0.5, 0.5, 0.5)  # filling a flat grey image with its own grey changes nothing
    assert context_mismatch(m, flat, TaskConfig("center", 0.5))["visible_changed"] == 0.0
    with pytest.raises(SystemExit):
        main(["--config", "mae_fmnist"])
    assert "this diagnostic is for MAGE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--original", str(tmp_path / "missing.pt")])
    assert "no cached original" in capsys.readouterr().err
