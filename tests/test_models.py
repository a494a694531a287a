"""Contract tests, parametrized over FAMILIES: adding a family puts it under test."""

import dataclasses

import pytest
import torch

from raysweep.config import TaskConfig
from raysweep.data.masks import task_mask
from raysweep.models import FAMILIES, get_family
from tests.conftest import TINY_OPTIONS

FAMILY_NAMES = sorted(FAMILIES)


def build(name, tiny_cfg):
    fam = get_family(name)
    torch.manual_seed(0)
    return fam, fam.build(dataclasses.replace(tiny_cfg.model, family=name, options=TINY_OPTIONS[name]))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_generate_shapes_ranges_and_known_pixels(name, tiny_cfg):
    fam, model = build(name, tiny_cfg)
    x = torch.rand(3, 3, 16, 16)
    for task in (TaskConfig("center", 0.5), TaskConfig("outpaint", 0.5), TaskConfig("extend_left", 0.25)):
        m = task_mask(task, 3, 16, 4)
        y = fam.generate(model, x, m)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        keep = ~m.unsqueeze(1).expand_as(x)
        assert torch.equal(y[keep], x[keep])


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_teacher_equals_student_with_shared_ctx(name, tiny_cfg):
    import copy

    fam, model = build(name, tiny_cfg)
    teacher = copy.deepcopy(model).eval()
    x = torch.rand(4, 3, 16, 16)
    g = torch.Generator().manual_seed(1)
    z, ctx = fam.encode(model, x, None, g)
    zt, _ = fam.encode(teacher, x, ctx)
    assert torch.equal(z, zt)
    z2, _ = fam.encode(model, x, None, torch.Generator().manual_seed(2))  # other masks, other latents
    assert not torch.equal(z, z2)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_gradients_only_on_encoder_parameters(name, tiny_cfg):
    fam, model = build(name, tiny_cfg)
    model.requires_grad_(False)
    enc = list(fam.encoder_parameters(model))
    for p in enc:
        p.requires_grad_(True)
    z, _ = fam.encode(model, torch.rand(2, 3, 16, 16))
    z.pow(2).sum().backward()
    enc_ids = {id(p) for p in enc}
    for n, p in model.named_parameters():
        if id(p) in enc_ids:
            continue
        assert p.grad is None, f"decoder parameter {n} got a gradient"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc)
    assert len(enc_ids) < len(list(model.parameters()))  # a decoder exists and is left out


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_pretrain_stages_train_what_they_name(name, tiny_cfg):
    fam, model = build(name, tiny_cfg)
    cfg = tiny_cfg.replace(**{"model.family": name, "model.options": TINY_OPTIONS[name]})
    stages = fam.pretrain_stages(cfg)
    assert stages and len({s.name for s in stages}) == len(stages)
    for st in stages:
        params = list(st.parameters(model))
        model.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        loss = fam.pretrain_loss(model, torch.rand(4, 3, 16, 16), torch.Generator().manual_seed(0), stage=st.name)
        assert torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in params), st.name  # DDP needs every trained param used
        ids = {id(p) for p in params}
        assert all(p.grad is None for p in model.parameters() if id(p) not in ids)


def test_unknown_family_and_option():
    with pytest.raises(ValueError, match="known families"):
        get_family("gan")
    from raysweep.config import ModelConfig

    with pytest.raises(ValueError, match="valid options"):
        get_family("mae").build(ModelConfig(options={"mask_ration": 0.5}))


@pytest.mark.parametrize("name", ["mae", "mage", "palette"])
def test_every_family_satisfies_the_declared_contract(name):
    """Every entry of FAMILIES provides each member of the ModelFamily protocol (functions and option sets)."""
    import inspect

    from raysweep.models import FAMILIES, ModelFamily
    from raysweep.models.family import ModelFamily as Declared

    fam = FAMILIES[name]
    assert ModelFamily is Declared and isinstance(fam, ModelFamily)
    members = sorted({m for m in dir(Declared) if not m.startswith("_")} | set(Declared.__annotations__))
    assert {"Options", "OPTIONS", "UNLEARN_OPTIONS", "patch_size", "encode", "generate"} <= set(members)
    for m in members:
        assert hasattr(fam, m), f"{name} lacks {m}"
    for m in ("OPTIONS", "UNLEARN_OPTIONS", "TRAINING_OPTIONS"):
        assert isinstance(getattr(fam, m), set) and fam.TRAINING_OPTIONS <= fam.UNLEARN_OPTIONS <= fam.OPTIONS
    assert fam.PAPER_OPTIMIZER == {"mae": "adamw", "mage": "adamw", "palette": "adam"}[name]  # App. B
    for m in members:
        if callable(getattr(Declared, m, None)):
            want = [p for p in inspect.signature(getattr(Declared, m)).parameters if p != "self"]
            assert list(inspect.signature(getattr(fam, m)).parameters)[: len(want)] == want, (name, m)


@pytest.mark.parametrize("name", ["mae", "mage", "palette"])
def test_family_options_are_a_frozen_dataclass_checked_in_one_place(name, tiny_cfg):
    """``model.options`` are read once, by ``parse_options``, into the family's frozen ``Options``: the option sets
    are its fields, values get the declared types, and a wrong type or an unknown key names the option."""
    from raysweep.config import ModelConfig
    from raysweep.models.family import option_names, parse_options

    fam = get_family(name)
    assert dataclasses.is_dataclass(fam.Options) and fam.Options.__dataclass_params__.frozen
    assert fam.OPTIONS == option_names(fam.Options) and fam.UNLEARN_OPTIONS <= fam.OPTIONS
    o = parse_options(name, fam.Options, TINY_OPTIONS[name])
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.__setattr__(next(iter(fam.OPTIONS)), None)
    with pytest.raises(ValueError, match="valid options"):
        fam.build(ModelConfig(family=name, options={"nope": 1}))
    int_field = {"mae": "depth", "mage": "decode_steps", "palette": "sample_steps"}[name]
    with pytest.raises(ValueError, match=rf"model.options.{int_field}=2.5 .*must be int"):
        parse_options(name, fam.Options, {int_field: 2.5})
    with pytest.raises(ValueError, match=rf"model.options.{int_field}='x'"):
        parse_options(name, fam.Options, {int_field: "x"})
    assert getattr(parse_options(name, fam.Options, {int_field: 4.0}), int_field) == 4
    mean = {"mae": "pixel_mean", "mage": "pixel_mean", "palette": "channel_mults"}[name]
    with pytest.raises(ValueError, match=f"model.options.{mean}=3 .*must be list"):
        parse_options(name, fam.Options, {mean: 3})


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_unlearning_on_the_pretraining_task_mixture(name, tiny_cfg):
    """``unlearn.train_mask=tasks``: the family's own masks in some steps, I2I tasks at drawn sizes in the others (not
    the evaluated hole every time), and Eq. 10 trains the encoder on each of them."""
    import copy

    from raysweep.config import UnlearnConfig
    from raysweep.unlearn.losses import METHODS
    from raysweep.unlearn.step import UnlearnStep

    fam, model = build(name, tiny_cfg)
    teacher = copy.deepcopy(model).eval()
    settings = UnlearnConfig(train_mask="tasks")
    settings.validate()  # a valid choice of the config
    step = UnlearnStep(fam, METHODS["ours"], teacher, settings, TaskConfig("center", 0.5))
    g, x = torch.Generator().manual_seed(0), torch.rand(4, 3, 16, 16)
    holes = [step._ctx(model, x, g) for _ in range(24)]
    sizes = {int(c["mask"][0].sum()) for c in holes if c is not None}
    assert any(c is None for c in holes) and len(sizes) >= 3, sizes  # not the evaluated hole every time
    out = step(model, (x, torch.tensor([True, False, True, False])), torch.Generator().manual_seed(1))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and any(p.grad is not None for p in fam.encoder_parameters(model))
