"""Bad input through the command line: a clear message, exit code 2, nothing written. Runs no Ray job."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from raysweep.cli import build_parser, format_table, main, parse_args
from tests.conftest import tiny_dict

ROOT = Path(__file__).resolve().parents[1]


def write_cfg(tmp_path, **sections):
    d = tiny_dict(tmp_path)
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def run(capsys, *argv):
    code = main(["unlearn", *argv])
    return code, capsys.readouterr().err


def test_unknown_key(tmp_path, capsys):
    code, err = run(capsys, "--config", str(write_cfg(tmp_path)), "unlearn.alhpa=1")
    assert code == 2 and "unknown config key" in err and "unlearn.alpha" in err
    assert not (tmp_path / "results" / "runs").exists()


def test_class_overlap_and_out_of_range(tmp_path, capsys):
    code, err = run(capsys, "--config", str(write_cfg(tmp_path)), "data.retain_classes=[1,2]")
    assert code == 2 and "both data.forget_classes and data.retain_classes" in err
    code, err = run(capsys, "--config", str(write_cfg(tmp_path)), "data.retain_classes=[2,9]")
    assert code == 2 and "valid ids are 0..5" in err
    assert not (tmp_path / "results" / "runs").exists()


def test_missing_checkpoint_says_where_to_get_it(tmp_path, capsys):
    code, err = run(
        capsys, "--config", str(write_cfg(tmp_path)), f"model.checkpoint={tmp_path}/mae_visualize_vit_base.pth"
    )
    assert code == 2 and "not found" in err and "dl.fbaipublicfiles.com" in err


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"garbage")
    code, err = run(capsys, "--config", str(write_cfg(tmp_path)), f"model.checkpoint={bad}")
    assert code == 2 and "corrupt" in err


def _folders(root, counts):
    from PIL import Image

    for split in ("train", "val"):
        for name, n in counts.items():
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / f"{i}.png")


def test_dataset_not_found_and_empty_split(tmp_path, capsys):
    data = {
        "dataset": "image_folder",
        "root": str(tmp_path / "nowhere"),
        "class_names": ["a", "b", "c", "d"],
        "forget_classes": [0],
        "retain_classes": [1],
    }
    code, err = run(capsys, "--config", str(write_cfg(tmp_path, data=data)))
    assert code == 2 and "DatasetNotFoundError" in err and "train/ and val/" in err
    _folders(tmp_path / "imgs", {"a": 2, "b": 0, "c": 1, "d": 1})
    data["root"] = str(tmp_path / "imgs")
    code, err = run(capsys, "--config", str(write_cfg(tmp_path, data=data)))
    assert code == 2 and "EmptySplitError" in err and "class 1" in err


def test_format_table():
    m = {
        "retain/fid": 11.0,
        "forget/fid": 40.0,
        "retain/is": 3.0,
        "forget/is": 2.0,
        "original/retain/fid": 10.0,
        "original/forget/fid": 10.0,
        "original/retain/is": 3.0,
        "original/forget/is": 3.0,
        "extractor": "x",
    }
    t = format_table(m)
    assert "4.00x" in t and "1.10x" in t and "extractor: x" in t


def test_commands_default_to_the_packaged_embedded_default_from_any_folder(tmp_path, monkeypatch):
    from raysweep.cli import build_parser, config_from_args

    monkeypatch.chdir(tmp_path)
    for cmd in ("unlearn", "pretrain", "sweep"):
        cfg = config_from_args(build_parser().parse_args([cmd, "--smoke-test"]))
        assert cfg.name == "mae_fmnist" and cfg.smoke_test and cfg.model.family == "mae"
    cfg = config_from_args(build_parser().parse_args(["unlearn", "--config", "palette_fmnist"]))
    assert cfg.model.family == "palette"


def test_yaml_syntax_error_is_one_message(tmp_path, capsys):
    p = tmp_path / "broken.yaml"
    p.write_text("data: {forget_classes: [0, 1\n")
    code, err = run(capsys, "--config", str(p))
    assert code == 2 and "broken.yaml is not valid YAML" in err and "Traceback" not in err


def test_bad_model_options_are_refused_before_any_compute(tmp_path, capsys):
    for override, words in (
        ("model.options.mask_ratio=5", "mask_ratio"),
        ("model.options.nope=1", "unknown"),
        ("model.options.depth=1.5", "must be int"),
        ("data.image_size=20", "data.image_size=20 does not fit the mae model"),  # the tiny MAE takes 16 px
    ):
        code, err = run(capsys, "--config", str(write_cfg(tmp_path)), override)
        assert code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "originals").exists()  # nothing was pretrained


def test_overrides_after_a_list_flag_stay_overrides():
    """``--methods a b key=value``: argparse alone would take the override as a third method."""
    argv = ["compare", "--methods", "ours", "max_loss", "unlearn.alpha=0.5", "--seeds", "2", "eval.part=val"]
    args = parse_args(build_parser(), argv)
    assert args.methods == ["ours", "max_loss"] and args.seeds == 2
    assert args.overrides == ["unlearn.alpha=0.5", "eval.part=val"]
    args = parse_args(build_parser(), ["unlearn", "data.forget_classes=[1,2]", "--config", "mage_fmnist"])
    assert args.config == "mage_fmnist" and args.overrides == ["data.forget_classes=[1,2]"]


@pytest.mark.parametrize(
    "script, extra",
    [
        ("tune_alpha.py", []),
        ("compare_baselines.py", []),
        ("ablate.py", ["--axis", "unlearn.alpha", "0.1"]),
        ("ablate_alpha.py", []),
        ("ablate_noise.py", []),
        ("ablate_retain_size.py", []),
        ("ablate_tasks.py", ["--checkpoint", "x.pt"]),
    ],
)
def test_experiment_scripts_answer_bad_input_in_one_line(tmp_path, script, extra):
    """The README's scripts handle bad input as ``raysweep`` does: one line naming it, exit status 2, no
    traceback, nothing written."""
    cfg = write_cfg(tmp_path)
    res = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), "--config", str(cfg), *extra, "unlearn.alhpa=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"{script[:-3]}: config error: unknown config key" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_a_missing_checkpoint_is_one_line_in_ablate_tasks(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "ablate_tasks.py"), "--config", str(write_cfg(tmp_path)),
         "--checkpoint", str(tmp_path / "nope.pt")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and "ablate_tasks: CheckpointError: --checkpoint" in res.stderr
    assert "Traceback" not in res.stderr


def test_frontier_without_a_store_names_the_results_folder_and_creates_nothing(tmp_path, capsys):
    code = main(["frontier", "--config", str(write_cfg(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2 and "no MLflow store at" in err and "tracking.results_dir" in err
    assert not (tmp_path / "results" / "mlflow.db").exists()
