"""The command line: train, re-run, sample, evaluate, interpolate, bad arguments.

Commands run in-process through ``tfvae.cli.main`` (no TensorFlow import per
call); one small training run is shared by the tests that need a model.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from tfvae import checkpoints, datasets, training
from tfvae.cli import main
from tfvae.config import TrainConfig

QUICK = ["--limit", "512", "--epochs", "2", "--latent-dim", "2", "--batch-size", "64",
         "--verbose", "0"]
_RUN: dict[str, Path] = {}


@pytest.fixture
def trained_run(data_dir, tmp_path_factory, monkeypatch):
    """A finished quick MNIST run (trained once for the whole module)."""
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    if "out" not in _RUN:
        out = tmp_path_factory.mktemp("cli") / "run"
        assert main(["train", *QUICK, "--nll-samples", "10", "--out", str(out)]) == 0
        _RUN["out"] = out
    return _RUN["out"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line on stderr, got:\n{err}"
    return err


def _image_events(log_dir: Path) -> dict[str, list[int]]:
    """Steps of each image summary tag in the event files under ``log_dir``."""
    steps: dict[str, list[int]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def test_train_writes_model_pictures_metrics_and_logs(trained_run):
    out = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] is True and metrics["epochs"] == 2
    assert metrics["config"]["likelihood"] == "bernoulli"  # the default for MNIST
    assert len(metrics["history"]["loss"]) == len(metrics["history"]["val_loss"]) == 2
    for split in ("train", "validation", "test"):
        m = metrics[split]
        assert m["elbo"] == pytest.approx(-(m["reconstruction"] + m["kl"]), rel=1e-5)
        assert m["loss"] == pytest.approx(-m["elbo"], rel=1e-5)  # beta = 1
        assert 50 < m["loss"] < 544  # below 784 * log 2 (a decoder that learned nothing)
    # The 10-sample importance-weighted NLL is a tighter bound than -ELBO.
    assert metrics["test"]["nll"] < metrics["test"]["loss"] + 1.0
    assert not (out / "checkpoints").exists()  # removed once the run finished

    model = checkpoints.load_model(out / "model.keras")
    assert model.latent_dim == 2 and model.data_shape == (28, 28, 1)
    assert int(model.optimizer.iterations) == 2 * 8  # 2 epochs of 512 / 64 batches
    samples = matplotlib.image.imread(out / "samples.png")
    assert samples.shape[:2] == (8 * 28 + 7, 8 * 28 + 7)  # 8 x 8 grid, 1-pixel gaps
    recon = matplotlib.image.imread(out / "reconstructions.png")
    assert recon.shape[:2] == (8 * 28 + 7, 8 * 28 + 7)  # 4 pairs of rows of 8

    images = _image_events(out / "logs" / "images")
    assert images["reconstructions"] == [1, 2] and images["samples"] == [1, 2]
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))


def test_rerun_of_a_finished_run_does_nothing(trained_run, capsys):
    before = (trained_run / "model.keras").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", *QUICK, "--nll-samples", "10", "--out", str(trained_run)]) == 0
    assert "already holds this finished run" in capsys.readouterr().out
    assert (trained_run / "model.keras").stat().st_mtime_ns == before


def test_rerun_with_other_arguments_is_refused(trained_run, capsys):
    before = (trained_run / "model.keras").read_bytes()
    args = ["train", *QUICK, "--out", str(trained_run)]
    args[args.index("--latent-dim") + 1] = "3"
    assert main(args) == 2
    err = _error_line(capsys)
    assert "latent_dim: stored 2, now 3" in err and "--overwrite" in err
    assert (trained_run / "model.keras").read_bytes() == before


def test_overwrite_trains_again(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    out = tmp_path / "run"
    args = ["train", "--limit", "128", "--epochs", "1", "--latent-dim", "2", "--verbose", "0",
            "--out", str(out)]
    assert main(args) == 0
    (out / "unrelated.txt").write_text("not ours")
    overwrite = [*args[:-2], "--latent-dim", "3", "--overwrite", "--out", str(out)]

    with monkeypatch.context() as offline:  # no data: the old run must survive --overwrite
        offline.setenv("TFVAE_DATA_DIR", str(tmp_path / "empty"))
        offline.setattr(urllib.request, "urlopen", _no_network)
        assert main(overwrite) == 1
    assert checkpoints.load_model(out / "model.keras").latent_dim == 2

    assert main(overwrite) == 0
    assert json.loads((out / "run_config.json").read_text())["config"]["latent_dim"] == 3
    assert checkpoints.load_model(out / "model.keras").latent_dim == 3
    assert (out / "unrelated.txt").read_text() == "not ours"  # only run files are removed


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network")


def test_validation_split_is_held_out_from_train(data_dir, monkeypatch):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    file_train = datasets.read_idx(datasets.fetch("mnist/train-images-idx3-ubyte.gz"))
    file_train = file_train[..., None].astype(np.float32) / 255
    splits = {s: datasets.load("mnist", s)[0] for s in datasets.SPLITS}
    assert len(splits["train"]) == 54000 and len(splits["valid"]) == 6000
    np.testing.assert_array_equal(splits["valid"], file_train[-6000:])
    np.testing.assert_array_equal(splits["train"], file_train[:-6000])
    assert len(splits["test"]) == 10000
    frey = {s: datasets.load("frey_face", s)[0] for s in datasets.SPLITS}
    assert [len(frey[s]) for s in ("train", "valid", "test")] == [1565, 200, 200]
    limited = training.load_data(TrainConfig(limit=300, seed=1))
    assert [len(limited[s]) for s in ("train", "valid", "test")] == [300, 300, 300]
    np.testing.assert_array_equal(limited["valid"], datasets.load("mnist", "valid", 300, seed=1)[0])


def test_sample(trained_run, tmp_path):
    paths = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    model = str(trained_run / "model.keras")
    assert main(["sample", "--model", model, "-n", "12", "--seed", "3", "--draws", "--out",
                 str(paths[0])]) == 0
    assert main(["sample", "--model", model, "-n", "12", "--seed", "3", "--draws", "--out",
                 str(paths[1])]) == 0
    assert main(["sample", "--model", model, "-n", "12", "--seed", "3", "--out",
                 str(paths[2])]) == 0  # mean images E[x|z], the default
    a, b, c = (matplotlib.image.imread(p)[..., 0] for p in paths)
    assert a.shape == (3 * 28 + 2, 4 * 28 + 3)  # ceil(sqrt(12)) = 4 columns, 3 rows
    np.testing.assert_array_equal(a, b)  # same seed, same images
    assert np.isin(a, [0.0, 1.0]).all()  # Bernoulli draws are black or white
    assert np.isin(c, [0.0, 1.0], invert=True).any()  # mean images have grey levels


def test_evaluate(trained_run, capsys):
    model = trained_run / "model.keras"
    assert main(["evaluate", "--model", str(model), "--limit", "100", "--nll-samples", "5"]) == 0
    printed = capsys.readouterr().out
    written = json.loads((trained_run / "evaluation-mnist-test.json").read_text())
    assert written["dataset"] == "mnist" and written["examples"] == 100  # from run_config.json
    assert written["elbo"] == pytest.approx(-(written["reconstruction"] + written["kl"]), rel=1e-5)
    assert written["nll_samples"] == 5 and np.isfinite(written["nll"])
    assert f"{written['elbo']:.4f}" in printed


def test_interpolate(trained_run, tmp_path):
    out = tmp_path / "strip.png"
    assert main(["interpolate", "--model", str(trained_run / "model.keras"), "--dataset",
                 "mnist", "--index-a", "3", "--index-b", "7", "--steps", "5", "--out",
                 str(out)]) == 0
    assert matplotlib.image.imread(out).shape[:2] == (28, 5 * 28 + 4)


@pytest.mark.parametrize("argv, expected", [
    (["train", "--dataset", "cifar10"], "invalid choice: 'cifar10'"),
    (["train", "--epochs", "-1"], "argument --epochs: expected a positive integer, got '-1'"),
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer"),
    (["train", "--batch-size", "ten"], "argument --batch-size: expected a positive integer"),
    (["train", "--latent-dim", "2.5"], "argument --latent-dim: expected a positive integer"),
    (["train", "--beta", "nan"], "argument --beta: expected a number >= 0, got 'nan'"),
    (["train", "--learning-rate", "0"], "argument --learning-rate: expected a positive number"),
    (["train", "--kl-warmup", "-5"], "argument --kl-warmup: expected an integer >= 0"),
    (["train", "--likelihood", "poisson"], "Unknown likelihood 'poisson'"),
    (["train", "--network", "rnn"], "invalid choice: 'rnn'"),
    (["sample"], "the following arguments are required: --model"),
    (["sample", "--model", "m.keras", "-n", "0"], "argument -n/--num: expected a positive"),
    (["interpolate", "--model", "m.keras", "--steps", "1"], "expected an integer >= 2"),
    (["evaluate", "--model", "m.keras", "--split", "dev"], "invalid choice: 'dev'"),
    (["fit"], "invalid choice: 'fit'"),
    ([], "a COMMAND is required"),
])
def test_bad_arguments_exit_2_with_one_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert expected in capsys.readouterr().err.strip().splitlines()[-1]
    assert not list(tmp_path.iterdir())  # nothing written


def test_missing_and_foreign_model_files_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.keras"
    assert main(["sample", "--model", str(missing)]) == 2
    assert f"model file {missing} does not exist" in _error_line(capsys)

    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    assert main(["evaluate", "--model", str(text), "--dataset", "mnist"]) == 2
    assert "is truncated or not a .keras file" in _error_line(capsys)

    other = tmp_path / "dense.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]).save(other)
    assert main(["interpolate", "--model", str(other), "--dataset", "mnist"]) == 2
    assert "expected a tfvae VAE" in _error_line(capsys)


def test_unwritable_output_exits_2_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert main(["train", "--out", str(blocker / "run")]) == 2
    assert f"cannot write to the folder {blocker / 'run'}" in _error_line(capsys)
    assert main(["sample", "--model", "m.keras", "--out", str(blocker / "s.png")]) == 2
    assert "cannot write to the folder" in _error_line(capsys)


def test_model_and_dataset_that_do_not_fit_exit_2(trained_run, capsys):
    model = str(trained_run / "model.keras")
    assert main(["evaluate", "--model", model, "--dataset", "frey_face"]) == 2
    assert "expects images of shape (28, 28, 1), but frey_face has (28, 20, 1)" in \
        _error_line(capsys)
    assert main(["interpolate", "--model", model, "--index-b", "10000"]) == 2
    assert "--index-b 10000 is out of range: mnist test has 10000 images" in _error_line(capsys)


def test_help_lists_exit_codes(capsys):
    for argv in (["--help"], ["train", "--help"], ["evaluate", "--help"]):
        assert main(argv) == 0
        assert "exit codes:" in capsys.readouterr().out
    assert TrainConfig(dataset="frey_face").likelihood == datasets.get("frey_face").likelihood
    assert datasets.get("frey_face").likelihood == "normal"
