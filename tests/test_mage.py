"""MAGE / VQ-GAN family: official key layouts (docs/protocol.md §5.1), masks, MaskGIT decoding, tied vs untied
decoder under unlearning."""

import copy

import pytest
import torch

from raysweep.config import ModelConfig, TaskConfig
from raysweep.data.masks import task_mask
from raysweep.models import get_family
from raysweep.models.checkpoints import CheckpointError
from tests.conftest import TINY_MAGE
from tests.test_checkpoints import vit_block_shapes

mage = get_family("mage")


def _resblock(sd: dict, b: str, cin: int, cout: int) -> None:
    sd.update(
        {
            b + "norm1.weight": (cin,),
            b + "norm1.bias": (cin,),
            b + "conv1.weight": (cout, cin, 3, 3),
            b + "norm2.weight": (cout,),
            b + "norm2.bias": (cout,),
            b + "conv2.weight": (cout, cout, 3, 3),
        }
    )
    if cin != cout:
        sd[b + "nin_shortcut.weight"] = (cout, cout, 1, 1)


def official_vqgan_state() -> dict[str, tuple]:
    """vqgan_jax_strongaug.ckpt ``state_dict`` keys / shapes from config/vqgan.yaml (ch 128, ch_mult 1,1,2,2,4,
    2 res blocks, z 256, 1024 codes; bias-free res-block convs, no attention, no quant_conv)."""
    ch, mult, z = 128, (1, 1, 2, 2, 4), 256
    sd = {"encoder.conv_in.weight": (ch, 3, 3, 3)}
    cin = ch
    for i, m in enumerate(mult):
        for j in range(2):
            _resblock(sd, f"encoder.down.{i}.block.{j}.", cin, ch * m)
            cin = ch * m
    for k in ("block_1", "block_2"):
        _resblock(sd, f"encoder.mid.{k}.", cin, cin)
        _resblock(sd, f"decoder.mid.{k}.", cin, cin)
    sd.update(
        {
            "encoder.norm_out.weight": (cin,),
            "encoder.norm_out.bias": (cin,),
            "encoder.conv_out.weight": (z, cin, 1, 1),
            "encoder.conv_out.bias": (z,),
            "decoder.conv_in.weight": (cin, z, 3, 3),
            "decoder.conv_in.bias": (cin,),
        }
    )
    for i in reversed(range(len(mult))):
        for j in range(2):
            _resblock(sd, f"decoder.up.{i}.block.{j}.", cin, ch * mult[i])
            cin = ch * mult[i]
        if i:
            sd.update(
                {f"decoder.up.{i}.upsample.conv.weight": (cin, cin, 3, 3), f"decoder.up.{i}.upsample.conv.bias": (cin,)}
            )
    sd.update(
        {
            "decoder.norm_out.weight": (cin,),
            "decoder.norm_out.bias": (cin,),
            "decoder.conv_out.weight": (3, cin, 3, 3),
            "decoder.conv_out.bias": (3,),
            "quantize.embedding.weight": (1024, z),
        }
    )
    return sd


def official_mage_state(with_vqgan: bool = True) -> dict[str, torch.Tensor]:
    """mage-vitb-1600.pth ``model`` keys / shapes (official §5.1), not built from our module."""
    D, V, L = 768, 2025, 257
    sd = {
        "cls_token": (1, 1, D),
        "pos_embed": (1, L, D),
        "patch_embed.proj.weight": (D, 3, 16, 16),
        "patch_embed.proj.bias": (D,),
        "token_emb.word_embeddings.weight": (V, D),
        "token_emb.position_embeddings.weight": (L, D),
        "token_emb.LayerNorm.weight": (D,),
        "token_emb.LayerNorm.bias": (D,),
        "norm.weight": (D,),
        "norm.bias": (D,),
        "decoder_embed.weight": (D, D),
        "decoder_embed.bias": (D,),
        "mask_token": (1, 1, D),
        "decoder_pos_embed": (1, L, D),
        "decoder_pos_embed_learned": (1, L, D),
        "decoder_norm.weight": (D,),
        "decoder_norm.bias": (D,),
        "decoder_pred.weight": (16 * 16 * 3, D),
        "decoder_pred.bias": (16 * 16 * 3,),
        "mlm_layer.fc.weight": (D, D),
        "mlm_layer.fc.bias": (D,),
        "mlm_layer.ln.weight": (D,),
        "mlm_layer.ln.bias": (D,),
        "mlm_layer.bias": (1, 1, V),
    }
    sd.update(vit_block_shapes("blocks", 12, D))
    sd.update(vit_block_shapes("decoder_blocks", 8, D))
    if with_vqgan:
        sd.update({f"vqgan.{k}": s for k, s in official_vqgan_state().items()})
    g = torch.Generator().manual_seed(0)
    out = {k: torch.randn(s, generator=g) * 0.02 for k, s in sd.items()}
    out["token_emb.position_ids"] = torch.arange(L).view(1, L)
    return out


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mage")
    state = official_mage_state()
    torch.save({"model": state}, d / "mage-vitb-1600.pth")
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("vqgan.")}}, d / "mage-novq.pth")
    torch.save(
        {"state_dict": {k[6:]: v for k, v in state.items() if k.startswith("vqgan.")}}, d / "vqgan_jax_strongaug.ckpt"
    )
    return d, state


def test_official_mage_vit_base_loads_strictly(official_files):
    d, state = official_files
    model = mage.build(ModelConfig(family="mage", preset="vit_base", checkpoint=str(d / "mage-vitb-1600.pth")))
    own = model.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], state[k]) for k in state)
    # the tokenizer from its own file (vqgan_jax_strongaug.ckpt, key state_dict)
    m2 = mage.build(
        ModelConfig(
            family="mage",
            preset="vit_base",
            checkpoint=str(d / "mage-novq.pth"),
            options={"tokenizer_checkpoint": str(d / "vqgan_jax_strongaug.ckpt")},
        )
    )
    assert torch.equal(m2.vqgan.quantize.embedding.weight, state["vqgan.quantize.embedding.weight"])
    assert m2.grid == 16 and m2.mask_token_label == 2024 and m2.fake_class_label == 1100
    x = torch.rand(1, 3, 256, 256)
    mask = task_mask(TaskConfig("center", 0.25), 1, 256)
    m2.decode_steps = 2
    y = mage.generate(m2, x, mask)
    assert y.shape == x.shape and torch.equal(y[:, :, ~mask[0]], x[:, :, ~mask[0]])


def test_official_mage_errors(official_files, tmp_path):
    d, _ = official_files
    with pytest.raises(CheckpointError, match="missing keys: vqgan"):
        mage.build(ModelConfig(family="mage", preset="vit_base", checkpoint=str(d / "mage-novq.pth")))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        mage.build(ModelConfig(family="mage", preset="tiny", checkpoint=str(d / "mage-vitb-1600.pth")))
    with pytest.raises(CheckpointError, match="Google Drive"):
        mage.build(ModelConfig(family="mage", preset="tiny", checkpoint=str(tmp_path / "mage-vitb-1600.pth")))


def tiny(**opts):
    torch.manual_seed(0)
    return mage.build(ModelConfig(family="mage", preset="tiny", options={**TINY_MAGE, **opts}))


def test_training_masks_follow_mage():
    m = tiny(img_size=32)
    g = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(50):
        ctx = mage.training_masks(m, 4, g, torch.device("cpu"))
        drop, masked = ctx["drop"], ctx["masked"]
        assert not drop[:, 0].any() and not masked[:, 0].any()  # the class token is always kept
        assert bool((drop <= masked).all())  # dropped tokens are masked tokens
        assert (drop.sum(1) == 32).all()  # ceil(64 * 0.5)
        rates.append(int(masked[0].sum()) / 64)
    assert min(rates) >= 0.5 and max(rates) <= 1.0 and len(set(rates)) > 5


def test_pretrain_masks_random_is_mages_own_mixed_adds_the_tasks_center_the_evaluated_hole():
    """``train_masks: random`` (the default) draws exactly MAGE's own masks, the same random stream as before the
    option; ``mixed`` gives about half the steps an I2I task's token masks (nothing dropped, one block of tokens
    for the whole batch, as the evaluation builds them) and the pretraining loss is finite on both kinds; ``center``
    gives exactly the evaluated center hole's token masks in about half the steps."""
    x = torch.rand(4, 3, 32, 32)
    m = tiny(img_size=32)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(5):
        a, b = mage.pretrain_masks(m, x, g1), mage.training_masks(m, 4, g2, torch.device("cpu"))
        assert torch.equal(a["masked"], b["masked"]) and torch.equal(a["drop"], b["drop"])
    mixed = tiny(img_size=32, train_masks="mixed")
    g = torch.Generator().manual_seed(0)
    kinds = []
    for _ in range(40):
        ctx = mage.pretrain_masks(mixed, x, g)
        task = ctx.get("fill_hole", False)
        kinds.append(task)
        if task:
            assert not ctx["drop"].any() and not ctx["masked"][:, 0].any()
            assert bool((ctx["masked"] == ctx["masked"][:1]).all())  # one task for the whole batch
        else:
            assert (ctx["drop"].sum(1) == 32).all()
    assert 8 <= sum(kinds) <= 32  # about half the steps
    for seed in range(4):  # a step of each kind, at least
        loss = mage.pretrain_loss(mixed, x, torch.Generator().manual_seed(seed))
        assert torch.isfinite(loss) and loss > 0
    center, hole = tiny(img_size=32, train_masks="center"), task_mask(TaskConfig("center", 0.5), 4, 32)
    want = mage.task_token_masks(center, hole)["masked"]  # 6 x 6 tokens: the 4 x 4 hole and a margin of one
    g, n = torch.Generator().manual_seed(0), 0
    for _ in range(40):
        ctx = mage.pretrain_masks(center, x, g)
        if ctx.get("fill_hole", False):
            n += 1
            assert torch.equal(ctx["masked"], want) and int(want[0].sum()) == 36 and not ctx["drop"].any()
    assert 8 <= n <= 32
    with pytest.raises(ValueError, match="train_masks.*choose one of"):
        tiny(train_masks="tasks")


def test_task_mask_pretraining_reads_the_tokens_generation_reads():
    """With an I2I task's masks the transformer pretrains on the tokens of the image whose hole is filled (what
    ``generate`` tokenizes), not on the whole image's tokens: the VQ-GAN sees the fill beyond the 1-token margin, so
    the two differ around the hole, and an original trained on the whole image's tokens meets unseen context at
    evaluation. MAGE's own masks keep the whole image's tokens; the targets are the whole image's tokens always."""
    from raysweep.models.mage import filled_images

    center = tiny(img_size=32, train_masks="center")
    x = torch.rand(4, 3, 32, 32)
    seen, got, encoder = {}, [], center.forward_encoder
    center.forward_encoder = lambda ids, drop: got.append(ids.clone()) or encoder(ids, drop)  # records its input
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        ctx = mage.pretrain_masks(center, x, torch.Generator().manual_seed(seed))
        got.clear()
        mage.pretrain_loss(center, x, g)
        task = bool(ctx.get("fill_hole", False))
        source = filled_images(x, ctx, center.pixel_mean) if task else x
        want = center.vqgan.tokenize(source).masked_fill(ctx["masked"][:, 1:], center.mask_token_label)
        want = center.with_class_token(want)
        assert torch.equal(got[0], want), f"seed {seed}, task masks: {task}"
        if task:  # the test can fail: the whole image's visible tokens differ from the filled image's
            whole = center.vqgan.tokenize(x)[~ctx["masked"][:, 1:]]
            assert not torch.equal(whole, center.vqgan.tokenize(source)[~ctx["masked"][:, 1:]])
        seen[task] = True
    assert seen == {True: True, False: True}  # both kinds of step ran


def test_train_masks_decides_the_original():
    """``train_masks`` changes how the original is pretrained, so it is part of the original's cache key (and the
    default key is the one without the option)."""
    from raysweep.config import Config
    from raysweep.pretrain import original_key

    cfg = Config.from_dict({"model": {"family": "mage", "preset": "tiny"}})
    mixed = cfg.replace(**{"model.options": {"train_masks": "mixed"}})
    random = cfg.replace(**{"model.options": {"train_masks": "random"}})
    center = cfg.replace(**{"model.options": {"train_masks": "center"}})
    assert original_key(mixed) != original_key(cfg)
    assert original_key(random) != original_key(mixed)
    assert len({original_key(center), original_key(mixed), original_key(random)}) == 3


def test_task_token_masks_margin():
    mask = task_mask(TaskConfig("center", 0.5), 2, 32)
    assert int(mage.task_token_masks(tiny(img_size=32), mask)["masked"][0].sum()) == 36  # 4x4 + 1 margin = 6x6
    assert int(mage.task_token_masks(tiny(img_size=32, token_margin=0), mask)["masked"][0].sum()) == 16


def test_maskgit_is_deterministic_and_fills_every_token():
    m = tiny(img_size=32, decode_steps=8).eval()
    x = torch.rand(3, 3, 32, 32)
    mask = task_mask(TaskConfig("center", 0.5), 3, 32)
    a, b = mage.generate(m, x, mask), mage.generate(m, x, mask)
    assert torch.equal(a, b)
    assert not torch.equal(a, mage.generate(m, x, mask, seed=1))
    assert not torch.equal(a[:, :, mask[0]], x[:, :, mask[0]])


@pytest.mark.parametrize("untie", [False, True])
def test_unlearning_moves_decoder_logits_only_when_tied(untie, tiny_cfg):
    """Official: the MLM output layer uses the encoder's word embeddings, so Eq. 10 changes the decoder's
    function; untie_decoder keeps it bit-identical."""
    from raysweep.jobs import pretrain_job, unlearn_job
    from raysweep.train import LocalHooks, fit

    cfg = tiny_cfg.replace(
        **{"model.family": "mage", "model.options": {**TINY_MAGE, "untie_decoder": untie}, "unlearn.lr": 1e-2}
    )
    orig = str(tiny_cfg.tracking.results_dir) + "/orig.pt"
    for stage in ("tokenizer", "transformer"):
        fit(pretrain_job(cfg, output=orig, stage=stage, init=orig if stage == "transformer" else None), LocalHooks(), 0)
    job = unlearn_job(cfg, orig, finish=lambda m, d: None)
    before = copy.deepcopy(job.module)
    fit(job, LocalHooks(), 0)
    after = job.module
    dec = ("decoder_embed", "decoder_blocks", "decoder_norm", "decoder_pos_embed_learned", "mlm_layer", "vqgan")
    sd0, sd1 = before.state_dict(), after.state_dict()
    for k in sd0:
        if k.startswith(dec) or k == "decoder_word_embeddings":
            assert torch.equal(sd0[k], sd1[k]), k
    assert not torch.equal(sd0["token_emb.word_embeddings.weight"], sd1["token_emb.word_embeddings.weight"])
    latent = torch.randn(2, 17, 32)
    nodrop = torch.zeros(2, 17, dtype=torch.bool)
    l0 = before.eval().forward_decoder(latent, nodrop, nodrop)
    l1 = after.eval().forward_decoder(latent, nodrop, nodrop)
    assert torch.equal(l0, l1) == untie


def test_unknown_mage_option():
    with pytest.raises(ValueError, match="valid options"):
        mage.build(ModelConfig(family="mage", options={"mask_ratio": 0.5}))
    with pytest.raises(ValueError, match="mask ratios"):
        mage.build(ModelConfig(family="mage", options={**TINY_MAGE, "mask_ratio_min": 0.0}))


def test_untied_state_dict_round_trip():
    m = tiny(untie_decoder=True)
    tied_state = tiny().state_dict()
    m.load_state_dict(tied_state)  # an original without the copy: the copy is filled in
    assert torch.equal(m.decoder_word_embeddings, tied_state["token_emb.word_embeddings.weight"])
    m2 = tiny(untie_decoder=True)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.decoder_word_embeddings, m.decoder_word_embeddings)
