"""Datasets of the VAE literature, verified by hash, as float32 arrays in [0, 1].

Each dataset is one :class:`Dataset` record in ``DATASETS``: its files and
their hashes, its parser, its shape, its label names, its split policy and
its default likelihood. The loader, the CLI's choices, ``tfvae train``, the
notebooks and the README's table all read these records; adding a dataset is
adding one record (:func:`register`).

Every dataset has the splits ``"train"``, ``"valid"`` and ``"test"``, the
same everywhere: where the source has no validation file, ``"valid"`` is the
last examples of its training file (``Dataset.held_out``) and ``"train"`` the
rest.

Files are looked for in the data directory (``$TFVAE_DATA_DIR``, else
``data/`` at the project root, else ``~/.tfvae/data``) under the same layout as
their download sites, e.g. ``mnist/train-images-idx3-ubyte.gz``. A file that
is missing is downloaded from its original source; every file, downloaded or
found, must match its published SHA-256 before it is used.

Arrays have a channel axis: ``[N, 28, 28, 1]`` (MNIST family) or
``[N, 28, 20, 1]`` (Frey Face).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tfvae.files import atomic_path
from tfvae.seeds import subset_indices

if TYPE_CHECKING:
    import tensorflow as tf

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lives locally and remotely, and its hash."""

    path: str  # relative to the data directory
    url: str
    sha256: str
    size: int  # bytes


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_BINARIZED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"

_FILES = {
    f.path: f
    for f in (
        RemoteFile("mnist/train-images-idx3-ubyte.gz", _MNIST_URL + "train-images-idx3-ubyte.gz",
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        RemoteFile("mnist/train-labels-idx1-ubyte.gz", _MNIST_URL + "train-labels-idx1-ubyte.gz",
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        RemoteFile("mnist/t10k-images-idx3-ubyte.gz", _MNIST_URL + "t10k-images-idx3-ubyte.gz",
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        RemoteFile("mnist/t10k-labels-idx1-ubyte.gz", _MNIST_URL + "t10k-labels-idx1-ubyte.gz",
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        RemoteFile("fashion-mnist/train-images-idx3-ubyte.gz",
                   _FASHION_URL + "train-images-idx3-ubyte.gz",
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        RemoteFile("fashion-mnist/train-labels-idx1-ubyte.gz",
                   _FASHION_URL + "train-labels-idx1-ubyte.gz",
                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        RemoteFile("fashion-mnist/t10k-images-idx3-ubyte.gz",
                   _FASHION_URL + "t10k-images-idx3-ubyte.gz",
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        RemoteFile("fashion-mnist/t10k-labels-idx1-ubyte.gz",
                   _FASHION_URL + "t10k-labels-idx1-ubyte.gz",
                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        RemoteFile("binarized_mnist/binarized_mnist_train.amat",
                   _BINARIZED_URL + "binarized_mnist_train.amat",
                   "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d", 78400000),
        RemoteFile("binarized_mnist/binarized_mnist_valid.amat",
                   _BINARIZED_URL + "binarized_mnist_valid.amat",
                   "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2", 15680000),
        RemoteFile("binarized_mnist/binarized_mnist_test.amat",
                   _BINARIZED_URL + "binarized_mnist_test.amat",
                   "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c", 15680000),
        RemoteFile("frey_face/frey_rawface.mat", _FREY_URL,
                   "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64", 1100584),
    )
}


class DatasetUnavailableError(FileNotFoundError):
    """A dataset file is missing and could not be downloaded."""


class DatasetCorruptError(ValueError):
    """A dataset file does not match its published hash."""


def data_dir() -> Path:
    """Where dataset files are cached (see the module docstring)."""
    if os.environ.get("TFVAE_DATA_DIR"):
        return Path(os.environ["TFVAE_DATA_DIR"]).expanduser()
    project_data = Path(__file__).resolve().parents[1] / "data"
    if project_data.is_dir():
        return project_data
    return Path.home() / ".tfvae" / "data"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int], bool] = {}


def fetch(relative_path: str, directory: str | os.PathLike | None = None) -> Path:
    """Path of a verified copy of one dataset file, downloading it if needed.

    Raises:
        DatasetCorruptError: the file found (or downloaded) has the wrong hash.
        DatasetUnavailableError: the file is missing and cannot be downloaded.
    """
    remote = FILES[relative_path]  # every registered dataset's files
    root = Path(directory) if directory is not None else data_dir()
    path = root / remote.path
    if not path.exists():
        _download(remote, path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if not _VERIFIED.get(key):
        found = sha256_of(path)
        if found != remote.sha256:
            raise DatasetCorruptError(
                f"{path} is corrupt or truncated ({stat.st_size} bytes, sha256 {found}); expected "
                f"{remote.size} bytes with sha256 {remote.sha256}. Delete it to download it "
                f"again from {remote.url}, or replace it with a good copy."
            )
        _VERIFIED[key] = True
    return path


def _download(remote: RemoteFile, path: Path) -> None:
    """Download to a temporary file beside ``path``, verify, then rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetUnavailableError(
            f"{path} is missing and its folder cannot be created ({error}). Set TFVAE_DATA_DIR "
            f"to a writable folder, or put the file there (sha256 {remote.sha256})."
        ) from error
    print(f"Downloading {remote.url} -> {path}")
    try:
        with atomic_path(path, suffix=".part") as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as response:
                shutil.copyfileobj(response, out, length=1 << 20)
            found = sha256_of(tmp)
            if found != remote.sha256:
                raise DatasetCorruptError(
                    f"download of {remote.url} has sha256 {found}; expected {remote.sha256}.")
    except (urllib.error.URLError, OSError) as error:
        raise DatasetUnavailableError(
            f"{path} is missing and could not be downloaded from {remote.url} ({error}). "
            f"Put a copy there (sha256 {remote.sha256}), or set TFVAE_DATA_DIR to a folder "
            f"holding {remote.path}."
        ) from error


# ------------------------------------------------------------------ parsers
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped) as a uint8 array, e.g. ``[N, 28, 28]``."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:  # 0x08: unsigned byte data
        raise DatasetCorruptError(f"{path} is not an unsigned-byte IDX file (magic {magic:#x}).")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_amat(path: Path) -> np.ndarray:
    """Larochelle & Murray's ``.amat``: rows of 784 '0'/'1' separated by spaces.

    Returns a uint8 array ``[N, 28, 28]`` of 0/1.
    """
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    digits = raw[0::2] - ord("0")  # every other byte is a digit, then ' ' or '\n'
    if digits.size % 784 or digits.max() > 1:
        raise DatasetCorruptError(f"{path} is not a 0/1 .amat file of 784 values per row.")
    return digits.reshape(-1, 28, 28)


def read_frey(path: Path) -> np.ndarray:
    """Frey Face, uint8 ``[1965, 28, 20]``."""
    from scipy.io import loadmat

    return loadmat(path)["ff"].T.reshape(-1, 28, 20)


# ------------------------------------------------------------------ records
Reader = Callable[[Callable[[str], Path], str], tuple[np.ndarray, "np.ndarray | None"]]


@dataclass(frozen=True)
class Dataset:
    """Everything tfvae knows about one dataset.

    Attributes:
        name: what ``load`` and ``--dataset`` call it.
        about: one line for the README table and ``--help``.
        files: its files (paths relative to the data directory, URLs, hashes).
        read: ``read(fetch, part) -> (images, labels)``: ``fetch(path)`` gives
            a verified local file; ``part`` is one of ``parts``; images are
            ``[N, H, W]`` raw values (divided by ``scale`` to get [0, 1]),
            labels ``[N]`` ints or None.
        parts: the parts its files hold, ``("train", "test")`` or all of
            ``SPLITS``.
        held_out: when there is no ``"valid"`` part, the validation split is
            the last ``held_out`` examples of the train part (an int), or that
            fraction of it (a float).
        shape: one example, ``(H, W, 1)``.
        sizes: examples in each split.
        scale: raw value of a white pixel.
        likelihood: default p(x|z) (a :func:`tfvae.likelihoods.get_likelihood` name).
        label_names: class names, index = label; None if unlabelled.
        binarizable: grey images that ``binarized=True`` may binarize.
    """

    name: str
    about: str
    files: tuple[RemoteFile, ...]
    read: Reader
    parts: tuple[str, ...]
    held_out: int | float
    shape: tuple[int, int, int]
    sizes: dict[str, int]
    scale: float = 255.0
    likelihood: str = "bernoulli"
    label_names: tuple[str, ...] | None = None
    binarizable: bool = False


DATASETS: dict[str, Dataset] = {}
FILES: dict[str, RemoteFile] = {}


def register(dataset: Dataset) -> Dataset:
    """Add ``dataset`` (replacing one of the same name); returns it."""
    DATASETS[dataset.name] = dataset
    FILES.update({f.path: f for f in dataset.files})
    return dataset


def names() -> tuple[str, ...]:
    """Names of the registered datasets."""
    return tuple(DATASETS)


def get(name: str) -> Dataset:
    """The record of ``name``; ``ValueError`` naming the choices if unknown."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Expected one of {', '.join(DATASETS)}.")
    return DATASETS[name]


def _idx_reader(folder: str) -> Reader:
    def read(fetch, part):
        prefix = "train" if part == "train" else "t10k"
        images = read_idx(fetch(f"{folder}/{prefix}-images-idx3-ubyte.gz"))
        labels = read_idx(fetch(f"{folder}/{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
        return images, labels

    return read


def _read_binarized(fetch, part):
    return read_amat(fetch(f"binarized_mnist/binarized_mnist_{part}.amat")), None


FREY_TEST = 200


def _read_frey_face(fetch, part):
    """A fixed shuffle (seed 1965) of the 1965 faces: the last 200 are the test part."""
    faces = read_frey(fetch("frey_face/frey_rawface.mat"))
    order = np.random.default_rng(1965).permutation(len(faces))
    order = order[:-FREY_TEST] if part == "train" else order[-FREY_TEST:]
    return faces[np.sort(order)], None


def _files(prefix: str) -> tuple[RemoteFile, ...]:
    return tuple(f for path, f in _FILES.items() if path.startswith(prefix))


DIGITS = tuple(str(d) for d in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")

register(Dataset(
    "mnist", "grey MNIST (IDX files); `binarized=True` for a fixed binarization, "
    "`make_dataset(..., dynamic_binarization=True)` to redraw every epoch",
    _files("mnist/"), _idx_reader("mnist"), ("train", "test"), 0.1, (28, 28, 1),
    {"train": 54000, "valid": 6000, "test": 10000}, label_names=DIGITS, binarizable=True))
register(Dataset(
    "binarized_mnist", "the fixed binarization of Larochelle & Murray (2011)",
    _files("binarized_mnist/"), _read_binarized, SPLITS, 0, (28, 28, 1),
    {"train": 50000, "valid": 10000, "test": 10000}, scale=1.0))
register(Dataset(
    "fashion_mnist", "Fashion-MNIST", _files("fashion-mnist/"), _idx_reader("fashion-mnist"),
    ("train", "test"), 0.1, (28, 28, 1), {"train": 54000, "valid": 6000, "test": 10000},
    label_names=FASHION, binarizable=True))
register(Dataset(
    "frey_face", "Frey Face, the real-valued data of Kingma & Welling (fixed shuffle)",
    _files("frey_face/"), _read_frey_face, ("train", "test"), 200, (28, 20, 1),
    {"train": 1565, "valid": 200, "test": 200}, likelihood="normal"))


def markdown_table() -> str:
    """The README's table of datasets, from the records."""
    rows = ["| name | what | shape | train / valid / test | default likelihood | labels |",
            "|---|---|---|---|---|---|"]
    for d in DATASETS.values():
        sizes = " / ".join(f"{d.sizes[s]:,}" for s in SPLITS)
        labels = f"{len(d.label_names)} classes" if d.label_names else "none"
        rows.append(f"| `{d.name}` | {d.about} | {'×'.join(map(str, d.shape))} | {sizes} | "
                    f"`{d.likelihood}` | {labels} |")
    return "\n".join(rows)


# ------------------------------------------------------------------ loaders
def binarize(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A fixed stochastic binarisation: each pixel is 1 with probability x."""
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def load(name: str, split: str = "train", limit: int | None = None, binarized: bool = False,
         seed: int = 0, directory: str | os.PathLike | None = None
         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a dataset split as ``(x, y)``.

    Args:
        name: a registered dataset (:func:`names`).
        split: ``"train"``, ``"valid"`` or ``"test"`` (see the module
            docstring: the same splits for every dataset and every caller).
        limit: keep a fixed random subset of at most this many examples (in
            file order; files may be sorted by class).
        binarized: for grey datasets (``mnist``, ``fashion_mnist``),
            binarise once with a fixed seed (static binarisation); for
            dynamic binarisation use ``make_dataset(..., dynamic_binarization=True)``.
        seed: seed of the subset and of the binarisation.
        directory: data directory (default :func:`data_dir`).

    Returns:
        ``x``: float32 ``[N, H, W, 1]`` in [0, 1]; ``y``: int labels ``[N]``
        or ``None`` (unlabelled datasets).
    """
    dataset = get(name)
    if split not in SPLITS:
        raise ValueError(f"{name} has no split {split!r}. Expected one of {', '.join(SPLITS)}.")
    if limit is not None:
        from tfvae.validation import check_count

        limit = check_count(limit, "limit", low=1)
    if binarized and not dataset.binarizable:
        raise ValueError(f"binarized=True is for grey datasets "
                         f"({', '.join(d.name for d in DATASETS.values() if d.binarizable)}); "
                         f"{name} is not one.")
    part = split if split in dataset.parts else "train"
    x, y = dataset.read(lambda path: fetch(path, directory), part)
    if part != split or (split == "train" and "valid" not in dataset.parts):
        held_out = dataset.held_out
        n_valid = held_out if isinstance(held_out, int) else round(held_out * len(x))
        keep = slice(len(x) - n_valid, None) if split == "valid" else slice(0, len(x) - n_valid)
        x, y = x[keep], (None if y is None else y[keep])
    x = (x.astype(np.float32) / dataset.scale)[..., None]
    if binarized:
        x = binarize(x, seed)
    index = subset_indices(len(x), limit, seed)
    if index is not None:
        x, y = x[index], (None if y is None else y[index])
    return x, y


def make_dataset(x: np.ndarray, batch_size: int = 128, shuffle: bool = True,
                 dynamic_binarization: bool = False, seed: int | None = None,
                 drop_remainder: bool = False, labels: np.ndarray | None = None
                 ) -> tf.data.Dataset:
    """A batched, prefetched ``tf.data.Dataset`` of ``x``, or of ``(x, labels)``
    pairs when ``labels`` (``[N]``, e.g. for a conditional VAE) are given.

    The array is held in memory once (``from_tensor_slices`` then ``cache``),
    reshuffled every epoch when ``shuffle``; with ``dynamic_binarization``
    each pixel is redrawn as Bernoulli(x) every time it is seen, the
    "dynamically binarised MNIST" of Burda et al.
    """
    import tensorflow as tf  # here, so that the command line starts without TensorFlow

    x = np.asarray(x, np.float32)
    ds = tf.data.Dataset.from_tensor_slices(x if labels is None else (x, labels)).cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if dynamic_binarization:
        # A Generator keeps its state across passes: an op-level random op would
        # replay the same draws on every new iterator once a global seed is set.
        noise = (tf.random.Generator.from_seed(seed) if seed is not None
                 else tf.random.Generator.from_non_deterministic_state())

        def binarize_batch(b):
            return tf.cast(noise.uniform(tf.shape(b)) < b, tf.float32)

        ds = ds.map(binarize_batch if labels is None else lambda b, y: (binarize_batch(b), y))
    # The data are in memory, so two batches in flight keep any device fed.
    # tf.data's autotuner is switched off: with data in memory it has nothing
    # to tune, and on small CPUs it slowed some passes (benchmarks/README.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)
