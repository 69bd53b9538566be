"""Datasets for kss: CIFAR-10/100, Fashion-MNIST, TinyImageNet and a small synthetic set.

Every failure a user can cause (unknown name, no data offline, corrupt files,
bad sizes) is raised as a one-line KssError instead of a library traceback.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning
import numpy as np
import torch
from filelock import FileLock
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision import datasets as tvd
from torchvision import transforms as T

from kss.errors import KssError

# Debian's dataset-fashion-mnist package; a module constant so tests can move it.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_ALTERNATIVES = "pass dataset=fashion_mnist / dataset=synthetic"


def _one_line(err: BaseException) -> str:
    # torchvision's download errors span several lines; keep every line, joined.
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class _Images(Dataset):
    """uint8 images [N,H,W(,C)] or image files + labels, shared (not copied) between transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        item = self.images[i]
        if isinstance(item, Path):
            try:
                image = Image.open(item).convert("RGB")
            except OSError as e:
                raise KssError(f"{item} is not a readable image ({_one_line(e)}); replace it from the dataset's archive") from e
        else:
            image = Image.fromarray(item)
        return self.transform(image), int(self.labels[i])


def _read_idx_gz(path: Path, ndim: int) -> np.ndarray:
    """Parse a gzipped IDX file (the MNIST format) straight into memory, no unpacking to disk."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    header = 4 * (ndim + 1)
    magic, *dims = struct.unpack(f">{ndim + 1}I", raw[:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if magic != 0x800 + ndim or data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is not a valid IDX file with {ndim} dimension(s)")
    return data.reshape(dims)


TINY_IMAGENET = "tiny-imagenet-200"


def tiny_imagenet_files(folder: Path, train: bool) -> tuple[list[Path], np.ndarray]:
    """The official tiny-imagenet-200 layout: wnids.txt, train/<wnid>/images/*.JPEG, and
    val/images/*.JPEG labelled by val/val_annotations.txt. Its test images have no labels, so kss's
    test split is the official val folder (SNASNet's validation set); kss's validation comes out of train.
    Labels follow the sorted wnids (torchvision ImageFolder's order)."""
    layout = "wnids.txt, train/<wnid>/images/*.JPEG, val/images/ and val/val_annotations.txt"
    fix = (f"download tiny-imagenet-200.zip (cs231n.stanford.edu) on a machine with internet and unzip it into "
           f"{folder.parent}, or pass dataset.root=<the folder holding {TINY_IMAGENET}>")
    wnids_file = folder / "wnids.txt"
    if not wnids_file.is_file():
        raise KssError(f"tinyimagenet was not found: {folder} has no {layout} (it is not downloaded automatically); {fix}")
    wnids = sorted(line.strip() for line in wnids_file.read_text().splitlines() if line.strip())
    index = {wnid: i for i, wnid in enumerate(wnids)}
    files, labels = [], []
    if train:
        for wnid in wnids:
            found = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
            if not found:
                raise KssError(f"tinyimagenet: {folder / 'train' / wnid / 'images'} holds no .JPEG images; {fix}")
            files += found
            labels += [index[wnid]] * len(found)
    else:
        annotations = folder / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise KssError(f"tinyimagenet: {annotations} is missing; {fix}")
        for number, line in enumerate(annotations.read_text().splitlines(), start=1):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise KssError(f"tinyimagenet: {annotations} line {number} names no class of wnids.txt; {fix}")
            path = folder / "val" / "images" / fields[0]
            if not path.is_file():
                raise KssError(f"tinyimagenet: {path} (listed in val_annotations.txt) is missing; {fix}")
            files.append(path)
            labels.append(index[fields[1]])
    return files, np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True)
class DatasetInfo:
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 2  # SNASNet's random-crop padding when augmenting
    # (datamodule, train) -> (images: uint8 arrays or image files, labels); None: generated (synthetic)
    read: Callable[[KssDataModule, bool], tuple] | None = None
    # where a missing dataset was looked for, and what to do, for the one-line error (None: `read` says it)
    places: Callable[[Path], list[Path]] | None = None
    fix: str = ""


class KssDataModule(lightning.LightningDataModule):
    """One datamodule for all kss datasets.

    With val_size=0 there is no validation split and val_dataloader() returns [];
    Lightning 2.x then skips the validation loop (no batches to run).
    """

    def __init__(self, name: str, root: str = "data", batch_size: int = 64, val_size: int = 0,
                 num_workers: int = 0, augment: bool = True, download: bool = True, seed: int = 0,
                 image_size: int | None = None, in_channels: int | None = None,
                 num_classes: int | None = None, train_size: int = 512, test_size: int = 128):
        super().__init__()
        if name not in DATASETS:
            raise KssError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
        if batch_size < 1 or val_size < 0 or num_workers < 0:
            raise KssError(f"need batch_size >= 1, val_size >= 0 and num_workers >= 0 "
                           f"(got {batch_size}, {val_size}, {num_workers})")
        info = DATASETS[name]
        shape = {"image_size": image_size, "in_channels": in_channels, "num_classes": num_classes}
        if name == "synthetic":
            if train_size < 1 or test_size < 1:
                raise KssError(f"synthetic needs train_size and test_size >= 1 (got {train_size}, {test_size})")
            shape = {k: v if v is not None else getattr(info, k) for k, v in shape.items()}
            if min(shape.values()) < 1:
                raise KssError(f"synthetic image_size, in_channels and num_classes must be >= 1 (got {shape})")
        else:
            for key, value in shape.items():
                if value is not None and value != getattr(info, key):
                    raise KssError(f"{key}={value} does not match {name} ({key}={getattr(info, key)}); "
                                   "only dataset=synthetic can change the image shape or class count")
                shape[key] = getattr(info, key)
        self.name, self.root = name, Path(root).expanduser().resolve()
        self.batch_size, self.val_size, self.num_workers = batch_size, val_size, num_workers
        self.augment, self.download, self.seed = augment, download, seed
        self.train_size, self.test_size = train_size, test_size
        self._shape = shape
        self.train_set = self.val_set = self.test_set = self._search_set = None

    @property
    def in_channels(self) -> int:
        return self._shape["in_channels"]

    @property
    def image_size(self) -> int:
        return self._shape["image_size"]

    @property
    def num_classes(self) -> int:
        return self._shape["num_classes"]

    # ---- loading -------------------------------------------------------------------
    def _transforms(self):
        info = DATASETS[self.name]
        finish = [T.ToTensor(), T.Normalize(info.mean, info.std)]
        augment = [T.RandomCrop(self.image_size, padding=info.crop_padding), T.RandomHorizontalFlip()]
        return T.Compose((augment if self.augment else []) + finish), T.Compose(finish)

    def _synthetic(self):
        g = torch.Generator().manual_seed(self.seed)
        protos = torch.randn(self.num_classes, self.in_channels, self.image_size, self.image_size, generator=g)

        def draw(n):  # prototype + noise: separable, so a small net can learn it
            y = torch.randint(0, self.num_classes, (n,), generator=g)
            return TensorDataset(protos[y] + 0.5 * torch.randn(protos[y].shape, generator=g), y)

        return draw(self.train_size), draw(self.test_size)

    def _fashion_arrays(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        images, labels = (DEBIAN_FASHION_MNIST / f for f in _FASHION_FILES["train" if train else "test"])
        if images.is_file() and labels.is_file():
            return _read_idx_gz(images, 3), _read_idx_gz(labels, 1).astype(np.int64)
        ds = tvd.FashionMNIST(str(self.root), train=train, download=self.download)
        return ds.data.numpy(), ds.targets.numpy()

    @contextlib.contextmanager
    def _download_lock(self):
        """Jobs started together (a search's shards, a sweep's jobs) download one at a time, never into
        the same files at once; the others then find the data there. A failed download leaves neither the
        lock file nor a data folder it created."""
        if not self.download or not os.access(self.root if self.root.exists() else self.root.parent, os.W_OK):
            yield
            return
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".kss-download.lock"
        ours = not path.exists()
        try:
            with FileLock(path):
                yield
        except BaseException:
            if ours:
                path.unlink(missing_ok=True)
            if created:  # and the empty folders the failed download made in it
                for folder in sorted((p for p in self.root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                with contextlib.suppress(OSError):
                    self.root.rmdir()
            raise

    def _arrays(self, train: bool) -> tuple[np.ndarray | list[Path], np.ndarray]:
        info = DATASETS[self.name]
        if info.places is None:
            return info.read(self, train)
        places, fix = info.places(self.root), info.fix.format(root=self.root)
        try:
            with self._download_lock():
                return info.read(self, train)
        except Exception as e:  # noqa: BLE001 - any reader failure becomes one readable line
            present = any(p.is_dir() and any(p.iterdir()) for p in places)
            where = " or ".join(map(str, places))
            if present:
                what, fix = f"is unreadable or corrupt in {where}", f"delete the damaged files, then {fix}"
            else:
                what = f"was not found in {where}" + (" and could not be downloaded" if self.download else " (download=False)")
            raise KssError(f"{self.name} {what} [{_one_line(e)}]; {fix}") from e

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:  # Lightning calls setup once per stage; load once
            return
        if DATASETS[self.name].read is None:  # synthetic
            train_eval, test = self._synthetic()
            train_aug = train_eval  # tensors, no transforms
        else:
            train_tf, eval_tf = self._transforms()
            x, y = self._arrays(train=True)
            # Two views over the same arrays so val/search never see the augmenting transform.
            train_aug, train_eval = _Images(x, y, train_tf), _Images(x, y, eval_tf)
            test = _Images(*self._arrays(train=False), eval_tf)
        n = len(train_eval)
        if self.val_size >= n:
            raise KssError(f"val_size={self.val_size} must be smaller than the {self.name} training set ({n} images)")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size:]
        self.train_set = Subset(train_aug, train_idx)
        self.val_set = Subset(train_eval, val_idx) if val_idx else None
        self._search_set = Subset(train_eval, train_idx)
        self.test_set = test

    # ---- loaders ---------------------------------------------------------------------
    def _loader(self, ds, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds, batch_size=self.batch_size, shuffle=shuffle, drop_last=False,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_set, shuffle=False)

    def search_batches(self, batch_size: int, repeats: int, seed: int) -> list[torch.Tensor]:
        """`repeats` un-augmented image batches from the training split, for training-free NAS scores."""
        if batch_size < 2:
            raise KssError(f"search batch_size={batch_size}: needs at least 2 images to compare spike patterns")
        if repeats < 1:
            raise KssError(f"search repeats={repeats}: needs at least 1 batch")
        self.setup()
        n = len(self._search_set)
        if batch_size > n:
            raise KssError(f"score.batch_size={batch_size} is larger than the {self.name} training split ({n} images); "
                           f"pass score.batch_size={n} or less")
        g = torch.Generator().manual_seed(seed)
        if batch_size * repeats <= n:  # disjoint batches when there are enough images
            chunks = torch.randperm(n, generator=g)[: batch_size * repeats].view(repeats, batch_size)
        else:
            chunks = torch.stack([torch.randperm(n, generator=g)[:batch_size] for _ in range(repeats)])
        # Index image by image: only the needed images are decoded and transformed.
        return [torch.stack([self._search_set[i][0] for i in row.tolist()]) for row in chunks]


def _read_cifar(cls):
    def read(data: KssDataModule, train: bool):
        ds = cls(str(data.root), train=train, download=data.download)
        return ds.data, np.asarray(ds.targets, dtype=np.int64)

    return read


def _read_fashion(data: KssDataModule, train: bool):
    return data._fashion_arrays(train)


def _read_tiny_imagenet(data: KssDataModule, train: bool):
    return tiny_imagenet_files(data.root / TINY_IMAGENET, train)


# A dataset is one entry here and its conf/dataset/<name>.yaml (its settings and the model it gets).
DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), crop_padding=4,
                           read=_read_cifar(tvd.CIFAR10), places=lambda root: [root / tvd.CIFAR10.base_folder],
                           fix=f"download it on a machine with internet into {{root}}, or {_ALTERNATIVES}"),
    "cifar100": DatasetInfo(3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), crop_padding=4,
                            read=_read_cifar(tvd.CIFAR100), places=lambda root: [root / tvd.CIFAR100.base_folder],
                            fix=f"download it on a machine with internet into {{root}}, or {_ALTERNATIVES}"),
    "fashion_mnist": DatasetInfo(1, 28, 10, (0.2860,), (0.3530,), read=_read_fashion,
                                 places=lambda root: [DEBIAN_FASHION_MNIST, root / "FashionMNIST" / "raw"],
                                 fix="install Debian's dataset-fashion-mnist, download it on a machine with internet "
                                     "into {root}, or pass dataset=synthetic"),
    # SNASNet's third dataset (its utils.py: ImageNet's mean and std); read from tiny-imagenet-200/ (its own errors)
    "tinyimagenet": DatasetInfo(3, 64, 200, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_padding=8,
                                read=_read_tiny_imagenet),
    # Synthetic defaults; its images are generated already centred, so no Normalize.
    "synthetic": DatasetInfo(3, 8, 10, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
