"""Dataset files: parsing, hash checks, missing files, and the tf.data pipeline.

Parsers are tested on files generated here; the real files (seeded by CI from
../shared/data) are checked against the facts published in SOURCES.md.
"""

import gzip
import json
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from tfvae import datasets


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "x.gz"), images)


def test_read_amat_matches_numpy_loadtxt(tmp_path):
    bits = np.random.default_rng(0).integers(0, 2, (3, 784))
    path = tmp_path / "b.amat"
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in bits))
    np.testing.assert_array_equal(datasets.read_amat(path).reshape(3, 784),
                                  np.loadtxt(path).astype(np.uint8))


def test_read_amat_rejects_a_file_of_other_values(tmp_path):
    path = tmp_path / "bad.amat"
    path.write_text(" ".join(["2"] * 784) + "\n")
    with pytest.raises(datasets.DatasetCorruptError, match="0/1 .amat"):
        datasets.read_amat(path)


def test_missing_file_without_network_names_the_file_and_hash(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.fetch("frey_face/frey_rawface.mat", tmp_path)
    message = str(info.value)
    assert "frey_rawface.mat is missing" in message
    assert datasets.FILES["frey_face/frey_rawface.mat"].sha256 in message
    assert "TFVAE_DATA_DIR" in message
    assert not any(tmp_path.rglob("*.part"))  # no partial download left behind


def test_truncated_file_is_detected_by_its_hash(tmp_path, data_dir):
    target = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    target.parent.mkdir()
    shutil.copy(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz", target)
    datasets.fetch("mnist/t10k-labels-idx1-ubyte.gz", tmp_path)  # the good copy passes
    with open(target, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(datasets.DatasetCorruptError, match="corrupt or truncated.*1000 bytes"):
        datasets.fetch("mnist/t10k-labels-idx1-ubyte.gz", tmp_path)


def test_real_files_load_with_their_published_shapes(data_dir):
    x, y = datasets.load("mnist", "test", directory=data_dir)
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x, _ = datasets.load("binarized_mnist", "valid", directory=data_dir)
    assert x.shape == (10000, 28, 28, 1) and set(np.unique(x)) == {0.0, 1.0}
    frey = np.concatenate([datasets.load("frey_face", s, directory=data_dir)[0]
                           for s in datasets.SPLITS])
    assert frey.shape == (1965, 28, 20, 1)
    assert (frey.min(), frey.max()) == (np.float32(8 / 255), np.float32(238 / 255))
    assert len(np.unique(frey.reshape(1965, -1), axis=0)) == 1965  # the splits do not overlap
    x, y = datasets.load("fashion_mnist", "test", directory=data_dir)
    assert np.bincount(y).tolist() == [1000] * 10


def test_subset_of_the_class_sorted_binarized_test_is_shuffled(data_dir):
    # The binarized test file is sorted by class; its first rows are zeros.
    # A subset must be spread over the file, not its first rows.
    full, _ = datasets.load("binarized_mnist", "test", directory=data_dir)
    part, _ = datasets.load("binarized_mnist", "test", limit=500, directory=data_dir)
    rows = {r.tobytes(): i for i, r in enumerate(full)}
    positions = np.array([rows[r.tobytes()] for r in part])
    assert positions.max() > 9000 and positions.min() < 1000


def test_static_binarization_is_fixed_and_dynamic_varies():
    x = np.full((64, 4, 4, 1), 0.3, np.float32)
    a, b = datasets.binarize(x, seed=1), datasets.binarize(x, seed=1)
    np.testing.assert_array_equal(a, b)
    ds = datasets.make_dataset(x, batch_size=64, shuffle=False, dynamic_binarization=True)
    first, second = (next(iter(ds)).numpy() for _ in range(2))
    assert set(np.unique(first)) == {0.0, 1.0}
    assert not np.array_equal(first, second)  # redrawn every pass
    # Bernoulli(0.3) over 1024 pixels: mean within 4 standard errors of 0.3.
    assert abs(first.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / first.size)


def test_unknown_dataset_or_split_lists_the_choices():
    with pytest.raises(ValueError, match="Expected one of mnist, binarized_mnist"):
        datasets.load("cifar10")
    with pytest.raises(ValueError, match="Expected one of train, valid, test"):
        datasets.load("binarized_mnist", "validation")


def test_every_record_gives_the_split_sizes_it_declares(data_dir):
    for name in datasets.names():
        record = datasets.get(name)
        for split in datasets.SPLITS:
            x, y = datasets.load(name, split, directory=data_dir)
            assert x.shape == (record.sizes[split], *record.shape), (name, split)
            assert (y is None) == (record.label_names is None)
            if y is not None:
                assert y.max() < len(record.label_names)


def test_the_readme_table_of_datasets_is_the_records_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert datasets.markdown_table() in readme


def test_a_registered_dataset_loads_and_trains_through_the_cli(tmp_path, monkeypatch):
    """Adding a dataset is adding one record: a toy one, from a file made here."""
    import hashlib

    from tfvae.cli import main

    images = (np.random.default_rng(0).random((60, 8, 8)) * 255).astype(np.uint8)
    path = tmp_path / "data" / "toy" / "toy.npy"
    path.parent.mkdir(parents=True)
    np.save(path, images)
    remote = datasets.RemoteFile("toy/toy.npy", "https://example.invalid/toy.npy",
                                 hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)

    def read(fetch, part):
        x = np.load(fetch("toy/toy.npy"))
        return (x[:50], None) if part == "train" else (x[50:], None)

    toy = datasets.Dataset("toy", "random 8x8 images", (remote,), read, ("train", "test"), 10,
                           (8, 8, 1), {"train": 40, "valid": 10, "test": 10})
    monkeypatch.setattr(datasets, "DATASETS", dict(datasets.DATASETS))
    monkeypatch.setattr(datasets, "FILES", dict(datasets.FILES))
    monkeypatch.setenv("TFVAE_DATA_DIR", str(tmp_path / "data"))
    datasets.register(toy)
    assert [len(datasets.load("toy", s)[0]) for s in datasets.SPLITS] == [40, 10, 10]
    out = tmp_path / "run"
    assert main(["train", "--dataset", "toy", "--epochs", "2", "--latent-dim", "2",
                 "--batch-size", "8", "--verbose", "0", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == "toy" and len(metrics["history"]["loss"]) == 2
