"""Versioned cache keys: a cached artifact is named by what produced it, not only by the config that asked for it.

Every artifact under ``$RAYSWEEP_CACHE`` (pretrained originals and their stages, the in-domain extractor, the
original's scores, torch-fidelity's reference statistics, the quality-gate report) has a *producer* here. Its
key hashes (1) the settings that change the artifact, (2) the content of its inputs (dataset files, the weights it
starts from or scores) and (3) the producer's ``version``. A change to what a producer writes must bump its
version, so a cache filled by older code is never picked up silently.

``fingerprint`` keeps that honest: it hashes the code of each producer's ``sources`` (the syntax tree, so comments,
docstrings and formatting do not count), and ``tests/test_cache.py`` fails when a fingerprint differs from the one
recorded below. Whoever changes a producer's code then decides: behaviour changed -> bump ``version``; pure
refactor -> keep it. Either way they record the new fingerprint (the failing test prints it).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import textwrap
from dataclasses import dataclass
from typing import Any

# the loop and the data every trained artifact goes through (``make_optimizer`` / ``lr_at``'s Adam and constant
# schedule, added for unlearning, left pretraining and the extractor bit-identical: versions kept)
_LOOP = (
    "raysweep.train:fit",
    "raysweep.train:lr_at",
    "raysweep.train:param_groups",
    "raysweep.train:make_optimizer",
    "raysweep.data.datasets:TensorImageDataset",
    "raysweep.data.datasets:fashion_mnist",
    "raysweep.data.datasets:synthetic",
    "raysweep.data.datasets:ImageFolderDataset",
)
_PRETRAIN = _LOOP + (
    "raysweep.jobs:pretrain_job",
    "raysweep.data.splits:pretrain_indices",
    "raysweep.data.splits:_pretrain_pool",
    "raysweep.data.splits:_class_order",
    "raysweep.data.masks",
)


@dataclass(frozen=True)
class Producer:
    version: int  # bump when what the producer writes changes
    sources: tuple[str, ...]  # "module" or "module:qualname" whose code decides the artifact
    fingerprint: str  # fingerprint(sources) when ``version`` was last reviewed


PRODUCERS: dict[str, Producer] = {
    # (the originals' versions were kept when their files started to record only the settings that decide them,
    # not the whole config of the run that trained them: the weights are the same bits, only that record changed)
    # v2: pretraining mixes I2I task masks into MAE's random masking; per-class image order independent of the
    # class lists; ``pretrain.seed``. (Versions kept when the task draw moved to data.masks for MAGE's
    # ``train_masks`` option, default random = MAGE's own masks, and when ``train_masks: center`` joined it: the
    # same random streams for every existing setting, the same weights.)
    "original:mae": Producer(2, _PRETRAIN + ("raysweep.models.mae",), "e9e5cd6498add50f"),
    # MAGE v3: task-mask pretraining steps (train_masks mixed / center) read the tokens of the hole-filled image, as
    # generation does, not the whole image's (train_masks random: the same weights as v2; bumped all the same)
    "original:mage": Producer(
        3,
        _PRETRAIN + ("raysweep.models.mage", "raysweep.models.vqgan", "raysweep.models.mae:init_vit_layout"),
        "00a1781454b370a0",
    ),
    # (v3 kept through the stochastic samplers and the default sampler: they change only generation, never the weights;
    # and through the unlearning-only options frozen_input_blocks, unlearn_t_max, forget_context, noise_context_below,
    # forget_t_max; and through train_masks' center box taken from data.masks.CENTER_TASK, the same pixels at every
    # size: tests/test_palette.py)
    "original:palette": Producer(
        3, _PRETRAIN + ("raysweep.models.palette", "raysweep.models.unet"), "d9c34df220c96c06"
    ),
    "extractor": Producer(
        2, _LOOP + ("raysweep.jobs:extractor_job", "raysweep.metrics.extractors:InDomainClassifier"), "5dc0d31e52463ee3"
    ),
    # features of the fixed reference images (torch-fidelity's cache) and the metrics computed from them
    "reference": Producer(
        1, ("raysweep.metrics.fidelity", "raysweep.metrics.extractors:_fidelity"), "39beaf574052b225"
    ),
    # the original's completions of the evaluation images and their scores
    # v3: classifier-on-outputs accuracy and in-domain cosine per group (kept when eval_groups learned to default to
    # eval.part: the scores are computed from heldout_groups(cfg, cfg.eval.part), which did not change)
    "scores": Producer(
        3,
        (
            "raysweep.metrics:complete",
            "raysweep.metrics:evaluate",
            "raysweep.metrics:classifier_scores",
            "raysweep.data.splits:eval_split",
            "raysweep.evaluate:eval_groups",
        ),
        "dd89b0210fa7072c",
    ),
    # the quality gate's report on a pretrained original
    # v4: keyed by the model section too (the sampler / decoding options decide the completions it scores)
    "quality": Producer(4, ("raysweep.quality",), "4b06c785e463d9a7"),
}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _source(ref: str) -> str:
    mod_name, _, qual = ref.partition(":")
    obj: Any = importlib.import_module(mod_name)
    for part in filter(None, qual.split(".")):
        obj = getattr(obj, part)
    return textwrap.dedent(inspect.getsource(obj))


def fingerprint(sources: tuple[str, ...]) -> str:
    """Hash of the code (syntax tree without docstrings) of ``sources``."""
    h = hashlib.sha256()
    for ref in sources:
        tree = _strip_docstrings(ast.parse(_source(ref)))
        h.update(ref.encode() + b"\0" + ast.dump(tree, annotate_fields=False).encode() + b"\0")
    return h.hexdigest()[:16]


def key(producer: str, payload: dict) -> str:
    """The cache key of an artifact of ``producer`` made from ``payload`` (settings and input content hashes)."""
    p = PRODUCERS[producer]
    blob = json.dumps({"producer": producer, "version": p.version, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def version(producer: str) -> int:
    return PRODUCERS[producer].version
