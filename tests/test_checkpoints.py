"""Official checkpoint layouts (docs/protocol.md §5.3), built here key by key from the documented layout."""

import pickle

import pytest
import torch

from raysweep.config import ModelConfig
from raysweep.models import get_family
from raysweep.models.checkpoints import CheckpointError, read_state_dict


def vit_block_shapes(prefix: str, n: int, d: int) -> dict[str, tuple]:
    """Keys / shapes of ``n`` ViT blocks of width ``d`` (qkv bias, MLP ratio 4) as the official ViTs save them."""
    sd = {}
    for i in range(n):
        b = f"{prefix}.{i}."
        sd.update(
            {
                b + "norm1.weight": (d,),
                b + "norm1.bias": (d,),
                b + "attn.qkv.weight": (3 * d, d),
                b + "attn.qkv.bias": (3 * d,),
                b + "attn.proj.weight": (d, d),
                b + "attn.proj.bias": (d,),
                b + "norm2.weight": (d,),
                b + "norm2.bias": (d,),
                b + "mlp.fc1.weight": (4 * d, d),
                b + "mlp.fc1.bias": (4 * d,),
                b + "mlp.fc2.weight": (d, 4 * d),
                b + "mlp.fc2.bias": (d,),
            }
        )
    return sd


def official_mae_vit_base_state() -> dict[str, torch.Tensor]:
    """mae_vit_base_patch16_dec512d8b keys and shapes as facebookresearch/mae saves them (not built from our model)."""
    D, Dd, L = 768, 512, 197
    sd = {
        "cls_token": (1, 1, D),
        "pos_embed": (1, L, D),
        "patch_embed.proj.weight": (D, 3, 16, 16),
        "patch_embed.proj.bias": (D,),
        "norm.weight": (D,),
        "norm.bias": (D,),
        "decoder_embed.weight": (Dd, D),
        "decoder_embed.bias": (Dd,),
        "mask_token": (1, 1, Dd),
        "decoder_pos_embed": (1, L, Dd),
        "decoder_norm.weight": (Dd,),
        "decoder_norm.bias": (Dd,),
        "decoder_pred.weight": (16 * 16 * 3, Dd),
        "decoder_pred.bias": (16 * 16 * 3,),
    }
    sd.update(vit_block_shapes("blocks", 12, D))
    sd.update(vit_block_shapes("decoder_blocks", 8, Dd))
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in sd.items()}


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("ckpt") / "mae_visualize_vit_base.pth"
    state = official_mae_vit_base_state()
    torch.save({"model": state}, p)
    return p, state


def test_official_mae_vit_base_loads_strictly(official_file):
    path, state = official_file
    model = get_family("mae").build(ModelConfig(preset="vit_base", checkpoint=str(path)))
    own = model.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], state[k]) for k in state)
    y = get_family("mae").generate(model, torch.rand(1, 3, 224, 224), torch.zeros(1, 224, 224, dtype=torch.bool))
    assert y.shape == (1, 3, 224, 224)


def test_wrong_layout_lists_the_differences(official_file, tmp_path):
    _, state = official_file
    bad = dict(state)
    bad.pop("norm.weight")
    bad["head.weight"] = torch.zeros(2)
    p = tmp_path / "bad.pth"
    torch.save({"model": bad}, p)
    with pytest.raises(CheckpointError, match=r"missing keys: norm\.weight.*unexpected keys: head\.weight"):
        get_family("mae").build(ModelConfig(preset="vit_base", checkpoint=str(p)))
    with pytest.raises(CheckpointError, match="shape mismatches"):  # a ViT-B file into the tiny preset
        get_family("mae").build(ModelConfig(preset="tiny", checkpoint=str(official_file[0])))


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(CheckpointError, match="dl.fbaipublicfiles.com/mae/visualize"):
        read_state_dict(tmp_path / "mae_visualize_vit_base.pth")
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "mine.pth")


def test_corrupt_and_unsafe_checkpoints_are_refused(tmp_path):
    p = tmp_path / "corrupt.pth"
    p.write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_state_dict(p)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    q = tmp_path / "evil.pth"
    with open(q, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(CheckpointError, match="refused.*unsafe") as e:  # weights_only=True refuses code
        read_state_dict(q)
    assert "download it again" not in str(e.value)  # named as unsafe, not as corrupt
    r = tmp_path / "evil_in_zip.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Evil()}, r)
    with pytest.raises(CheckpointError, match="refused.*unsafe"):
        read_state_dict(r)
