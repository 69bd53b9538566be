"""Tests for kss.train.data. Real CIFAR is never downloaded: tiny files in the real on-disk format."""
import gzip
import io
import pickle
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from kss.train import data as kd
from kss.train.data import DATASETS, KssDataModule
from kss.errors import KssError


# ---- fixtures in the real formats -------------------------------------------------------
class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING), as in the real CIFAR archives.

    Loaded with encoding="latin1" (what torchvision does) keys become 'data', 'labels', ...;
    with encoding="bytes" they are b'data', b'labels', exactly like the real files.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj, path: Path):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, n=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = [(i + j) % 10 for j in range(n)]
        _py2_pickle({b"batch_label": name.encode(), b"labels": labels, b"data": _images(n, i),
                     b"filenames": [f"img{j}.png".encode() for j in range(n)]}, folder / name)
    _py2_pickle({b"num_cases_per_batch": n, b"num_vis": 3072,
                 b"label_names": [f"class{k}".encode() for k in range(10)]}, folder / "batches.meta")
    return folder


def write_cifar100(root: Path, n_train=20, n_test=8):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [(7 * j) % 100 for j in range(n)]
        _py2_pickle({b"filenames": [b"x.png"] * n, b"batch_label": name.encode(), b"fine_labels": fine,
                     b"coarse_labels": [f // 5 for f in fine], b"data": _images(n, n)}, folder / name)
    _py2_pickle({b"fine_label_names": [f"f{k}".encode() for k in range(100)],
                 b"coarse_label_names": [f"c{k}".encode() for k in range(20)]}, folder / "meta")
    return folder


@pytest.fixture
def no_md5(monkeypatch):
    """Tiny files cannot match the real md5 sums: check existence only (tests only)."""
    exists = lambda fpath, md5=None: Path(fpath).is_file()  # noqa: E731
    monkeypatch.setattr(tv_cifar, "check_integrity", exists)  # used by _load_meta
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("offline")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def write_idx_gz(path: Path, array: np.ndarray):
    header = struct.pack(f">{array.ndim + 1}I", 0x800 + array.ndim, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_fashion(folder: Path, n_train=12, n_test=5):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


# ---- synthetic --------------------------------------------------------------------------
def test_synthetic_shapes_and_determinism():
    dm = KssDataModule("synthetic", batch_size=16, val_size=100, seed=1)
    dm.setup("fit")
    assert (dm.in_channels, dm.image_size, dm.num_classes) == (3, 8, 10)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (412, 100, 128)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 8, 8) and y.shape == (16,) and y.dtype == torch.int64
    assert next(iter(dm.val_dataloader()))[0].shape == (16, 3, 8, 8)
    assert sum(len(b[0]) for b in dm.test_dataloader()) == 128

    same = KssDataModule("synthetic", batch_size=16, val_size=100, seed=1)
    other = KssDataModule("synthetic", batch_size=16, val_size=100, seed=2)
    for d in (same, other):
        d.setup()
    assert torch.equal(dm.test_set.tensors[0], same.test_set.tensors[0])
    assert torch.equal(next(iter(dm.train_dataloader()))[0], next(iter(same.train_dataloader()))[0])
    assert not torch.equal(dm.test_set.tensors[0], other.test_set.tensors[0])


def test_synthetic_overrides_and_no_val():
    dm = KssDataModule("synthetic", image_size=5, in_channels=2, num_classes=4, train_size=40, test_size=9,
                       batch_size=8)
    dm.setup()
    assert (dm.in_channels, dm.image_size, dm.num_classes) == (2, 5, 4)
    assert dm.val_dataloader() == [] and len(dm.train_set) == 40
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 2, 5, 5) and int(y.max()) < 4


def test_synthetic_is_learnable():
    # Nearest class mean on the training set should classify the test set well.
    dm = KssDataModule("synthetic", seed=3)
    dm.setup()
    (xtr, ytr), (xte, yte) = dm.train_set.dataset.tensors, dm.test_set.tensors
    means = torch.stack([xtr[ytr == c].mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(xte.flatten(1), means).argmin(1)
    assert (pred == yte).float().mean() > 0.9


def test_search_batches():
    dm = KssDataModule("synthetic", val_size=12, train_size=100)
    a, b = dm.search_batches(8, 3, seed=5), dm.search_batches(8, 3, seed=5)
    assert len(a) == 3 and all(t.shape == (8, 3, 8, 8) for t in a)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    assert not torch.equal(a[0], dm.search_batches(8, 3, seed=6)[0])
    # Disjoint batches: 24 distinct images, none from the validation split.
    rows = {tuple(img.flatten().tolist()) for t in a for img in t}
    val = {tuple(dm.val_set[i][0].flatten().tolist()) for i in range(len(dm.val_set))}
    assert len(rows) == 24 and not rows & val
    # More than the split can hold disjointly: independent draws, still distinct within a batch.
    big = dm.search_batches(60, 2, seed=0)
    assert all(len({tuple(i.flatten().tolist()) for i in t}) == 60 for t in big)


@pytest.mark.parametrize("kwargs, words", [
    (dict(batch_size=1, repeats=1), "at least 2 images"),
    (dict(batch_size=500, repeats=1), "500"),
    (dict(batch_size=4, repeats=0), "repeats"),
])
def test_search_batches_errors(kwargs, words):
    dm = KssDataModule("synthetic", val_size=100, train_size=200)
    with pytest.raises(KssError, match=words) as err:
        dm.search_batches(seed=0, **kwargs)
    if kwargs["batch_size"] == 500:
        assert "100" in str(err.value)  # the size of the training split
    assert "\n" not in str(err.value)


def test_bad_names_and_sizes():
    with pytest.raises(KssError, match="cifar10, cifar100, fashion_mnist, synthetic, tinyimagenet"):
        KssDataModule("imagenet")
    with pytest.raises(KssError, match="val_size=512"):
        KssDataModule("synthetic", val_size=512).setup()
    with pytest.raises(KssError, match="image_size=64"):
        KssDataModule("cifar10", image_size=64)
    KssDataModule("cifar10", image_size=32, in_channels=3, num_classes=10)  # matching is fine
    assert DATASETS["cifar100"].num_classes == 100


# ---- CIFAR in the real on-disk format -----------------------------------------------------
@pytest.mark.parametrize("name, writer, n_train, n_test", [
    ("cifar10", write_cifar10, 30, 6),
    ("cifar100", write_cifar100, 20, 8),
])
def test_cifar_real_format(tmp_path, no_md5, name, writer, n_train, n_test):
    folder = writer(tmp_path)
    with open(folder / ("data_batch_1" if name == "cifar10" else "train"), "rb") as f:
        assert b"data" in pickle.load(f, encoding="bytes")  # keys are bytes, like the real files
    dm = KssDataModule(name, root=str(tmp_path), batch_size=4, val_size=2, augment=False, download=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (n_train - 2, 2, n_test)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    # Pixel (0,0) of test image 0, red channel, normalised by hand.
    raw = pickle.load(open(folder / ("test_batch" if name == "cifar10" else "test"), "rb"), encoding="bytes")
    info = DATASETS[name]
    expected = (raw[b"data"][0, 0] / 255 - info.mean[0]) / info.std[0]
    assert x[0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-5)
    labels = raw[b"labels"] if name == "cifar10" else raw[b"fine_labels"]
    assert y.tolist() == labels[:4]
    assert x.abs().max() < 3  # normalised, not 0..255


def test_cifar_augment_not_shared_with_val(tmp_path, no_md5):
    write_cifar10(tmp_path)
    dm = KssDataModule("cifar10", root=str(tmp_path), val_size=5, augment=True, download=False)
    dm.setup()
    assert dm.train_set.dataset is not dm.val_set.dataset
    assert dm.train_set.dataset.images is dm.val_set.dataset.images  # same arrays, no copy
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])  # eval transform: deterministic
    assert set(dm.train_set.indices).isdisjoint(dm.val_set.indices)
    batches = dm.search_batches(4, 2, seed=0)
    assert [b.shape for b in batches] == [(4, 3, 32, 32)] * 2


def test_cifar_corrupt_file(tmp_path, no_md5):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_1").write_bytes(b"this is not a pickle \x00\xff" * 10)
    with pytest.raises(KssError, match="corrupt") as err:
        KssDataModule("cifar10", root=str(tmp_path), download=False).setup()
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


# ---- offline / missing --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_offline_download(tmp_path, offline, name):
    root = tmp_path / "empty"
    with pytest.raises(KssError) as err:
        KssDataModule(name, root=str(root), download=True).setup()
    msg = str(err.value)
    assert str(root.resolve()) in msg and "dataset=synthetic" in msg and name in msg
    assert "URLError" in msg and "\n" not in msg
    assert not root.exists()  # a failed download leaves no lock file and no data folder


def test_a_failed_download_into_an_existing_folder_leaves_only_what_was_there(tmp_path, offline):
    (tmp_path / "other.txt").write_text("kept")
    with pytest.raises(KssError):
        KssDataModule("cifar10", root=str(tmp_path), download=True).setup()
    assert not (tmp_path / ".kss-download.lock").exists() and (tmp_path / "other.txt").read_text() == "kept"


def test_cifar_missing_no_download(tmp_path):
    with pytest.raises(KssError, match=r"not found .*download=False") as err:
        KssDataModule("cifar10", root=str(tmp_path), download=False).setup()
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


def test_fashion_offline(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(kd, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(KssError) as err:
        KssDataModule("fashion_mnist", root=str(tmp_path / "root"), download=True).setup()
    msg = str(err.value)
    assert str(tmp_path / "root") in msg and "dataset=synthetic" in msg and "\n" not in msg
    assert not (tmp_path / "root").exists()  # no lock file, no empty folders left
    with pytest.raises(KssError, match="download=False"):
        KssDataModule("fashion_mnist", root=str(tmp_path / "r2"), download=False).setup()


# ---- Fashion-MNIST ------------------------------------------------------------------------
def test_fashion_idx_fixture(tmp_path, monkeypatch):
    fake = write_fashion(tmp_path / "debian")
    monkeypatch.setattr(kd, "DEBIAN_FASHION_MNIST", fake)
    dm = KssDataModule("fashion_mnist", root=str(tmp_path / "root"), batch_size=5, val_size=2, download=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (10, 2, 5)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (5, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]
    assert not (tmp_path / "root").exists()  # read in place, nothing copied
    (fake / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01garbage"))
    with pytest.raises(KssError, match="corrupt"):
        KssDataModule("fashion_mnist", root=str(tmp_path / "root"), download=False).setup()


@pytest.mark.skipif(not all((kd.DEBIAN_FASHION_MNIST / f).is_file() for pair in kd._FASHION_FILES.values()
                            for f in pair), reason="Debian dataset-fashion-mnist is not installed")
def test_fashion_debian_real(tmp_path):
    dm = KssDataModule("fashion_mnist", root=str(tmp_path), batch_size=256, download=False)
    dm.setup()
    assert (len(dm.train_set), len(dm.test_set)) == (60000, 10000)
    assert (dm.in_channels, dm.image_size, dm.num_classes) == (1, 28, 10)
    train_labels = dm.train_set.dataset.labels
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(dm.test_set.labels).tolist() == [1000] * 10
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (256, 1, 28, 28)
    assert abs(x.mean().item()) < 0.3 and 0.7 < x.std().item() < 1.3  # normalised stats


# ---- TinyImageNet in the official tiny-imagenet-200 layout ----------------------------------
def write_tiny_imagenet(root: Path, wnids=("n02", "n01", "n03"), per_class=3, val_per_class=2) -> Path:
    """A small tree in exactly the official layout; image i of class c is a flat colour (c, i)."""
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")  # unsorted, as the official file
    annotations = []
    for c, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            Image.new("RGB", (64, 64), (10 * c, 10 * i, 200)).save(images / f"{wnid}_{i}.JPEG", quality=95)
        for i in range(val_per_class):
            name = f"val_{c * val_per_class + i}.JPEG"
            Image.new("RGB", (64, 64), (10 * c, 100 + i, 50)).save(folder / "val" / "images" / name, quality=95)
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return folder


def test_tiny_imagenet_reads_the_official_layout(tmp_path):
    write_tiny_imagenet(tmp_path)
    dm = KssDataModule("tinyimagenet", root=str(tmp_path), batch_size=4, val_size=2, augment=False, download=False)
    dm.setup()
    assert (dm.in_channels, dm.image_size, dm.num_classes) == (3, 64, 200)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (7, 2, 6)
    # labels follow the sorted wnids: n01 -> 0, n02 -> 1, n03 -> 2 (the file lists n02 first)
    files, labels = kd.tiny_imagenet_files(tmp_path / "tiny-imagenet-200", train=True)
    assert [(f.parent.parent.name, int(y)) for f, y in zip(files, labels)][::3] == [("n01", 0), ("n02", 1), ("n03", 2)]
    images, y = next(iter(dm.test_dataloader()))
    assert images.shape == (4, 3, 64, 64) and y.tolist() == [1, 1, 0, 0]  # val_0, val_1 are n02; val_2, val_3 n01
    green = (100 / 255 - DATASETS["tinyimagenet"].mean[1]) / DATASETS["tinyimagenet"].std[1]
    assert images[0, 1, 32, 32].item() == pytest.approx(green, abs=0.05)  # JPEG rounding


def test_tiny_imagenet_missing_or_broken_is_one_line(tmp_path):
    with pytest.raises(KssError, match=r"tinyimagenet was not found: .*tiny-imagenet-200 has no wnids.txt") as info:
        KssDataModule("tinyimagenet", root=str(tmp_path), download=False).setup()
    assert "\n" not in str(info.value) and "unzip it into" in str(info.value)
    folder = write_tiny_imagenet(tmp_path)
    (folder / "val" / "images" / "val_0.JPEG").unlink()
    with pytest.raises(KssError, match="val_0.JPEG .listed in val_annotations.txt. is missing"):
        KssDataModule("tinyimagenet", root=str(tmp_path), download=False).setup()
    (folder / "val" / "images" / "val_0.JPEG").write_bytes(b"not a jpeg")
    dm = KssDataModule("tinyimagenet", root=str(tmp_path), download=False, val_size=0)
    dm.setup()
    with pytest.raises(KssError, match="val_0.JPEG is not a readable image"):
        dm.test_set[0]


def test_tiny_imagenet_composes_snasnets_network(compose_cfg, tmp_path):
    from kss.config import model_spec
    from kss.space.genotype import sample_genotype
    from kss.space.network import build_network
    from kss.space.neurons import NeuronSpec
    from kss.space.params import count_params

    write_tiny_imagenet(tmp_path)
    cfg = compose_cfg("dataset=tinyimagenet", f"dataset.root={tmp_path}", "dataset.val_size=2", tiny=False)
    dm = KssDataModule(**{**cfg.dataset, "root": str(tmp_path)})
    spec = model_spec(cfg, dm)
    assert (spec.c1, spec.c2, spec.population, spec.hidden, spec.stem_stride, spec.sap) == (128, 256, 1000, 4096, 2, 2)
    assert spec.features == 256 * 8 * 8  # SNASNet: 256 x (64 // (4 x 2))^2
    genotype = sample_genotype(np.random.default_rng(0), (1, 3), "forward")
    net = build_network(genotype, spec, NeuronSpec())
    assert sum(p.numel() for p in net.parameters()) == count_params(genotype, spec, NeuronSpec())
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 200)
