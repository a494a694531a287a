"""cluster.yaml (and its commented GCP / on-prem variants) pass Ray's autoscaler validator."""

import copy
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _commented_block(marker: str) -> dict:
    lines, inside = [], False
    for line in CLUSTER.read_text().splitlines():
        if line.startswith("# ---"):
            inside = marker in line
            continue
        if inside and line.startswith("#"):
            lines.append(line[2:])
    return yaml.safe_load("\n".join(lines))


def test_aws_cluster_validates():
    cfg = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["available_node_types"]["head"]["resources"] == {"CPU": 0}  # no trials on the head
    assert any("pip install" in c and "raysweep" in c for c in cfg["setup_commands"])


def test_gcp_variant_validates():
    cfg = yaml.safe_load(CLUSTER.read_text())
    cfg.update(_commented_block("GCP variant"))
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["provider"]["type"] == "gcp"


def test_onprem_variant_validates():
    cfg = _commented_block("On-prem variant")
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["provider"]["type"] == "local"
