import pytest
import torch

from raysweep.config import TaskConfig
from raysweep.data.masks import TASKS, patch_mask, task_mask


@pytest.mark.parametrize("size", [32, 64, 256])
def test_center_crop_is_sized_by_ratio(size):
    for ratio in (0.25, 0.5):
        m = task_mask(TaskConfig("center", ratio), 2, size)
        side = round(size * ratio)
        assert m.shape == (2, size, size) and int(m[0].sum()) == side * side
        a = (size - side) // 2
        assert m[0, a : a + side, a : a + side].all()


def test_paper_patch_counts_at_256():
    # the paper's 4x4 and 8x8 of 16x16 patches
    for ratio, n in ((0.25, 16), (0.5, 64)):
        pm = patch_mask(task_mask(TaskConfig("center", ratio), 1, 256), 16)
        assert int(pm.sum()) == n


def test_outpaint_and_extensions():
    m = task_mask(TaskConfig("outpaint", 0.25), 1, 256)[0]
    assert m[:32].all() and not m[32:224, 32:224].any()  # 32 px strips (official §4.1)
    up = task_mask(TaskConfig("extend_up", 0.25), 1, 32)[0]
    assert up[:8].all() and not up[8:].any()
    right = task_mask(TaskConfig("extend_right", 0.5), 1, 32)[0]
    assert right[:, 16:].all() and not right[:, :16].any()


def test_random_masking_fraction_per_sample():
    g = torch.Generator().manual_seed(0)
    m = task_mask(TaskConfig("random", 0.75), 4, 32, patch=4, generator=g)
    pm = patch_mask(m, 4)
    assert (pm.sum(1) == 48).all() and not torch.equal(pm[0], pm[1])


def test_all_tasks_build():
    for name in TASKS:
        assert task_mask(TaskConfig(name, 0.5), 1, 32, patch=4).any()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("size,patch", [(32, 4), (224, 16), (16, 1)])
def test_kept_patches_is_the_host_count_of_the_device_mask(task, size, patch):
    from raysweep.data.masks import kept_patches

    t = TaskConfig(task, 0.5 if task != "random" else 0.75)
    pm = patch_mask(task_mask(t, 3, size, patch, torch.Generator().manual_seed(0)), patch)
    assert ((~pm).sum(dim=1) == kept_patches(t, size, patch)).all()


def test_mae_ids_with_a_known_count_equal_the_counted_ones():
    from raysweep.models.mae import ids_from_patch_mask

    pm = patch_mask(task_mask(TaskConfig("random", 0.75), 4, 32, 4, torch.Generator().manual_seed(1)), 4)
    a, b = ids_from_patch_mask(pm), ids_from_patch_mask(pm, n_keep=16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (4, 16)


def test_pretrain_task_draws_share_one_stream_and_center_draws_the_evaluated_hole():
    """``train_masks``: every setting draws the same three uniforms per step (so ``mixed`` keeps its random stream
    and the originals pretrained before ``center`` existed keep their bits), own masks in the same steps; ``center``
    then always gives the center hole of 1/2, ``mixed`` tasks of several kinds and sizes. MAE's pretraining mask
    follows it: the exact center hole in the task steps."""
    from raysweep.data.masks import CENTER_TASK, draw_pretrain_task
    from raysweep.models import mae

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    mixed = [draw_pretrain_task(g1, masks="mixed") for _ in range(60)]
    center = [draw_pretrain_task(g2, masks="center") for _ in range(60)]
    assert [t is None for t in mixed] == [t is None for t in center]
    assert 15 <= sum(t is not None for t in center) <= 45
    assert all(t == CENTER_TASK for t in center if t is not None) and CENTER_TASK == TaskConfig("center", 0.5)
    assert len({(t.name, t.ratio) for t in mixed if t is not None}) > 5
    assert torch.equal(g1.get_state(), g2.get_state())

    model = mae.MaskedAutoencoderViT(**{**mae.PRESETS["tiny"], "depth": 1, "decoder_depth": 1})
    model.train_masks = "center"
    x, hole = torch.rand(2, 3, 32, 32), task_mask(CENTER_TASK, 2, 32, 4)
    g, kinds = torch.Generator().manual_seed(0), []
    for _ in range(20):
        m = mae.pretrain_mask(model, x, g)
        kinds.append(torch.equal(m, hole))
        if not kinds[-1]:  # MAE's own random masking: 75 % of the 64 patches per image
            assert (patch_mask(m, 4).sum(1) == 48).all()
    assert 4 <= sum(kinds) <= 16
