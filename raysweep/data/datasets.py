"""Labelled image datasets: Fashion-MNIST (the embedded default), image folders (ImageNet / Places layouts), synthetic.

Every dataset yields ``(image, label)`` with ``image`` a float tensor ``[3, H, W]`` in [0, 1] and exposes ``labels``
(a LongTensor over all items) so that splits can pick indices per class without decoding images.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import logging
import os
import struct
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from raysweep.config import DataConfig
from raysweep.paths import cache_dir

log = logging.getLogger(__name__)

FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FMNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # compared lower-cased: .JPEG, .PNG count too


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files could not be found, fetched or read; the message names the places or the file."""


class TensorImageDataset(Dataset):
    """In-memory uint8 images ``[N, C, H, W]`` (C = 1 or 3) returned as float RGB in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str], raw: bool = False):
        assert images.dtype == torch.uint8 and images.ndim == 4, images.shape
        self.images, self.labels, self.class_names = images, labels.long(), list(class_names)
        self.raw = raw

    def training_view(self) -> TensorImageDataset:
        """The same items as uint8 RGB ``[3, H, W]``: the training loop converts them on its device."""
        return TensorImageDataset(self.images, self.labels, self.class_names, raw=True)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i] if self.raw else self.images[i].float().div_(255.0)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        return x, int(self.labels[i])


class ImageFolderDataset(Dataset):
    """``root/<split>/<class folder>/*.jpg`` with class ids given by the order of ``class_names`` (paper §4.1:
    100 forget + 100 retain ImageNet classes, 50 + 50 Places365 classes). Resize + center crop to ``size``."""

    def __init__(self, root: Path, class_names: list[str], size: int, raw: bool = False):
        self.raw = raw
        if not class_names:
            raise ValueError("data.class_names is empty: image_folder needs the folder name of every class id")
        self.root, self.class_names, self.size = root, list(class_names), size
        files, labels = [], []
        for cid, name in enumerate(class_names):
            folder = root / name
            if not folder.is_dir():
                raise DatasetNotFoundError(
                    f"class folder {str(folder)!r} (class id {cid}) does not exist; "
                    f"data.class_names must name folders under {str(root)!r}"
                )
            found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            files += found
            labels += [cid] * len(found)
        self.files, self.labels = files, torch.tensor(labels, dtype=torch.long)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image
        from torchvision.transforms import functional as TF

        try:
            im = Image.open(self.files[i])
            im.load()
        except OSError as e:  # names the file even inside a DataLoader worker
            raise DatasetNotFoundError(f"{self.files[i]} is not a readable image ({e}); remove or replace it") from e
        with im:
            im = im.convert("RGB")
            im = TF.center_crop(TF.resize(im, self.size, interpolation=TF.InterpolationMode.BICUBIC), self.size)
            return (TF.pil_to_tensor(im) if self.raw else TF.to_tensor(im)), int(self.labels[i])

    def check_sample(self, per_class: int = 4) -> None:
        """Open the first, the last and evenly spaced files of every class (``per_class`` in all) and read their
        pixels, so that a non-image or truncated file is reported in the driver, before any training starts."""
        from PIL import Image

        by_class: dict[int, list[Path]] = {}
        for f, c in zip(self.files, self.labels.tolist()):
            by_class.setdefault(c, []).append(f)
        for cid, files in by_class.items():
            step = max(1, (len(files) - 1) // max(per_class - 1, 1))
            for f in dict.fromkeys(files[::step][: per_class - 1] + files[-1:]):
                try:
                    with Image.open(f) as im:
                        im.load()
                except OSError as e:
                    raise DatasetNotFoundError(
                        f"{f} (class {self.class_names[cid]!r}) is not a readable image ({e}); remove or replace "
                        "it (image folders must hold only .jpg / .jpeg / .png / .bmp / .webp images)"
                    ) from e

    def training_view(self) -> ImageFolderDataset:
        """The same items as uint8 ``[3, H, W]``, decoded in the DataLoader's workers; the loop converts them on
        its device."""
        view = copy.copy(self)
        view.raw = True
        return view


def _fmnist_candidates() -> list[Path]:
    """Where the four idx files may be: only ``$RAYSWEEP_DATA`` when it is set (a user who points there means it:
    no silent fallback), else Debian's package folder."""
    if os.environ.get("RAYSWEEP_DATA"):
        base = Path(os.environ["RAYSWEEP_DATA"]).expanduser()
        return [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]
    return [FMNIST_DEBIAN_DIR]


def _idx_problem(name: str, data: bytes) -> str | None:
    """Why ``data`` is not a valid Fashion-MNIST idx file called ``name`` (None when it is): magic number, shape
    and length must agree (a truncated or foreign file is caught here, before it reaches the cache)."""
    images = "images" in name
    if len(data) < (16 if images else 8):
        return f"{len(data)} bytes is too short for an idx header"
    magic, n = struct.unpack(">II", data[:8])
    if magic != (2051 if images else 2049):
        return f"magic number {magic} is not that of an idx {'image' if images else 'label'} file"
    want = 16 + n * 28 * 28 if images else 8 + n
    if images and struct.unpack(">II", data[8:16]) != (28, 28):
        return f"images are {struct.unpack('>II', data[8:16])}, not 28 x 28"
    if len(data) != want:
        return f"holds {len(data)} bytes where its header ({n} items) needs {want} (truncated or padded)"
    if not images and data[8:] and max(data[8:]) > 9:
        return "holds labels above 9"
    return None


def _read_source(src: Path) -> bytes:
    try:
        if src.suffix == ".gz":
            with gzip.open(src, "rb") as f:
                return f.read()
        return src.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetNotFoundError(
            f"Fashion-MNIST file {src} cannot be read ({type(e).__name__}: {e}): a truncated or corrupt download? "
            "Replace it (apt-get install --reinstall dataset-fashion-mnist, or fresh files in $RAYSWEEP_DATA)"
        ) from None


def _staged_ok(raw: Path) -> bool:
    if not all((raw / f).is_file() for f in FMNIST_FILES):
        return False
    bad = [f for f in FMNIST_FILES if _idx_problem(f, (raw / f).read_bytes())]
    if bad:
        log.warning("staged Fashion-MNIST files %s in %s are invalid: staging them again", bad, raw)
    return not bad


def _stage_fmnist() -> Path:
    """A torchvision root holding ``FashionMNIST/raw/<4 idx files>``, staged from the first place that has them.

    Every file is read whole and checked (gzip integrity, idx header, length, train / test counts that agree)
    before anything is written; then each is written to a temporary file and renamed, so a bad source never
    reaches the cache and concurrent workers never see half a file."""
    root = cache_dir() / "data"
    raw = root / "FashionMNIST" / "raw"
    if _staged_ok(raw):
        return root
    looked = []
    for d in _fmnist_candidates():
        looked.append(str(d))
        srcs = {}
        for f in FMNIST_FILES:
            for cand in (d / f, d / (f + ".gz")):
                if cand.is_file():
                    srcs[f] = cand
                    break
        if len(srcs) != len(FMNIST_FILES):
            continue
        data = {f: _read_source(src) for f, src in srcs.items()}
        for f, blob in data.items():
            problem = _idx_problem(f, blob)
            if problem:
                raise DatasetNotFoundError(
                    f"Fashion-MNIST file {srcs[f]} is not a valid idx file: {problem}. Replace it (apt-get install "
                    "--reinstall dataset-fashion-mnist, or fresh files in $RAYSWEEP_DATA); nothing was staged"
                )
        for split in ("train", "t10k"):
            n_img = struct.unpack(">I", data[f"{split}-images-idx3-ubyte"][4:8])[0]
            n_lab = struct.unpack(">I", data[f"{split}-labels-idx1-ubyte"][4:8])[0]
            if n_img != n_lab:
                raise DatasetNotFoundError(
                    f"Fashion-MNIST {split} files in {d} disagree: {n_img} images but {n_lab} labels; replace them"
                )
        raw.mkdir(parents=True, exist_ok=True)
        for f, blob in data.items():
            tmp = raw / f"{f}.{os.getpid()}.tmp"  # workers may stage concurrently: replace is atomic
            try:
                tmp.write_bytes(blob)
                tmp.replace(raw / f)
            finally:
                tmp.unlink(missing_ok=True)
        log.info("staged Fashion-MNIST from %s", d)
        return root
    if os.environ.get("RAYSWEEP_DATA"):
        raise DatasetNotFoundError(
            f"RAYSWEEP_DATA={os.environ['RAYSWEEP_DATA']} does not hold the four Fashion-MNIST idx files ("
            + ", ".join(FMNIST_FILES)
            + ", optionally .gz; looked in "
            + ", ".join(looked)
            + "). Put them there, or unset RAYSWEEP_DATA to use the Debian package (apt-get install -y "
            "dataset-fashion-mnist) or torchvision's download"
        )
    try:  # last resort: torchvision's own download (needs internet)
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
        return root
    except Exception as e:  # noqa: BLE001 - re-raised with the full list of places
        raise DatasetNotFoundError(
            "Fashion-MNIST not found. Looked for the four idx files (" + ", ".join(FMNIST_FILES) + ", optionally .gz) "
            f"in: (1) $RAYSWEEP_DATA (unset); (2) {FMNIST_DEBIAN_DIR} "
            "(Debian package: `apt-get install -y dataset-fashion-mnist`); (3) torchvision download into "
            f"{root} failed: {type(e).__name__}: {e}. Fix: install the Debian package, or set RAYSWEEP_DATA to a "
            f"folder with the files. (looked in {looked})"
        ) from e


def fashion_mnist(train: bool, size: int) -> TensorImageDataset:
    """Fashion-MNIST through torchvision's loader, as ``size``x``size`` images (grey, returned as RGB) in [0, 1]."""
    from torchvision.datasets import FashionMNIST

    root = _stage_fmnist()
    ds = FashionMNIST(str(root), train=train, download=False)
    x = ds.data.unsqueeze(1)  # [N, 1, 28, 28] uint8
    if size != x.shape[-1]:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp_(0, 255).to(torch.uint8)
    return TensorImageDataset(x, ds.targets, list(FMNIST_CLASSES))


def synthetic(train: bool, size: int, num_classes: int, per_class: int = 64, seed: int = 0) -> TensorImageDataset:
    """Class-dependent shapes and colours plus noise: learnable in seconds, for tests."""
    g = torch.Generator().manual_seed(seed + (0 if train else 1))
    n = per_class * num_classes
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    imgs = torch.empty(n, 3, size, size)
    for c in range(num_classes):
        angle = 2 * torch.pi * c / num_classes
        pattern = torch.sin(
            3 * (xx * torch.cos(torch.tensor(angle)) + yy * torch.sin(torch.tensor(angle))) * (1 + c % 3)
        )
        colour = torch.tensor([(c * 37 % 100) / 100, (c * 61 % 100) / 100, (c * 83 % 100) / 100]).view(3, 1, 1)
        base = 0.5 + 0.35 * pattern.unsqueeze(0) * (0.5 + colour)
        sel = labels == c
        imgs[sel] = base + 0.05 * torch.randn(int(sel.sum()), 3, size, size, generator=g)
    imgs = (imgs.clamp(0, 1) * 255).round().to(torch.uint8)
    return TensorImageDataset(imgs, labels, [f"class{c}" for c in range(num_classes)])


def dataset_fingerprint(cfg: DataConfig) -> str:
    """A hash of the dataset's content, part of every cache key built from it (a changed file makes new keys):
    Fashion-MNIST's four staged files; an image folder's file list with sizes; a synthetic set's settings."""
    from raysweep.models.checkpoints import sha256

    h = hashlib.sha256(cfg.dataset.encode())
    if cfg.dataset == "fashion_mnist":
        raw = _stage_fmnist() / "FashionMNIST" / "raw"
        for f in FMNIST_FILES:
            h.update(sha256(raw / f).encode())
    elif cfg.dataset == "synthetic":
        h.update(json.dumps([cfg.image_size, cfg.num_classes, cfg.seed]).encode())
    else:
        root = Path(cfg.root).expanduser()
        for split in ("train", "val"):
            for name in cfg.class_names:
                folder = root / split / name
                if folder.is_dir():
                    for p in sorted(folder.iterdir()):
                        if p.suffix.lower() in IMAGE_EXTENSIONS:  # exactly the files the dataset loads
                            h.update(f"{split}/{name}/{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def load_dataset(cfg: DataConfig, train: bool) -> Dataset:
    """The configured dataset's train or test split (class ids as in the config's class lists)."""
    if cfg.dataset == "fashion_mnist":
        ds = fashion_mnist(train, cfg.image_size)
    elif cfg.dataset == "synthetic":
        ds = synthetic(train, cfg.image_size, cfg.num_classes, seed=cfg.seed)
    else:
        root = Path(cfg.root).expanduser()
        split = root / ("train" if train else "val")
        if not split.is_dir():
            raise DatasetNotFoundError(
                f"image_folder split {str(split)!r} not found; data.root must hold train/ "
                "and val/ with one folder per class (ImageNet / Places365 layout)"
            )
        ds = ImageFolderDataset(split, cfg.class_names, cfg.image_size)
    n = ds.num_classes
    bad = [c for c in list(cfg.forget_classes) + list(cfg.retain_classes) if not 0 <= c < n]
    if bad:
        raise ValueError(f"class ids {bad} are out of range for {cfg.dataset}: valid ids are 0..{n - 1}")
    return ds
