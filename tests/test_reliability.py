"""Nothing is lost on faults: kills, corrupt files, failed saves, NaN losses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import small_vae

from tfvae import callbacks, checkpoints, files, training
from tfvae.cli import main

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- kill -9
def test_killed_training_resumes_after_the_last_finished_epoch(data_dir, tmp_path):
    out = tmp_path / "run"
    epochs = 6
    command = [sys.executable, "-m", "tfvae", "train", "--limit", "512", "--epochs", str(epochs),
               "--latent-dim", "2", "--batch-size", "32", "--verbose", "2", "--out", str(out)]
    env = dict(os.environ, TFVAE_DATA_DIR=str(data_dir))
    state_file = out / "checkpoints" / "state.json"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while not state_file.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)  # power loss: no clean-up at all
        first.wait(timeout=30)
    first_log = (tmp_path / "first.log").read_text()
    assert first.returncode == -signal.SIGKILL, first_log
    assert not (out / "metrics.json").exists()  # the run did not finish
    done = json.loads(state_file.read_text())["epoch"]
    assert 1 <= done < epochs
    assert checkpoints.load_model(out / "model.keras").latent_dim == 2  # a whole model

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=400)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"Resuming {out} after epoch {done} of {epochs}" in second.stdout
    resumed = [int(n) for n in re.findall(rf"^Epoch (\d+)/{epochs}$", second.stdout, re.M)]
    assert resumed == list(range(done + 1, epochs + 1))  # not from epoch 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] and len(metrics["history"]["loss"]) == epochs
    model = checkpoints.load_model(out / "model.keras")
    assert int(model.optimizer.iterations) == epochs * 512 // 32  # optimizer state carried over
    # no stale temporary files (the lock file stays: it is reused)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".tfvae.lock"]


def test_ctrl_c_exits_130_and_the_same_command_resumes(data_dir, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    argv = ["train", "--limit", "256", "--epochs", "3", "--latent-dim", "2", "--batch-size",
            "64", "--verbose", "2", "--out", str(tmp_path / "run")]
    check_batch = callbacks.NonFiniteLossGuard.on_train_batch_end

    def ctrl_c_in_epoch_2(self, batch, logs=None):
        check_batch(self, batch, logs)
        if self._epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(callbacks.NonFiniteLossGuard, "on_train_batch_end", ctrl_c_in_epoch_2)
        assert main(argv) == 130
    first = capsys.readouterr()
    assert "interrupted. Re-run the same command to resume." in first.err
    assert "Epoch 2/3" in first.out and "Epoch 3/3" not in first.out

    assert main(argv) == 0
    second = capsys.readouterr().out
    assert f"Resuming {tmp_path / 'run'} after epoch 1 of 3" in second
    assert re.findall(r"^Epoch (\d)/3$", second, re.M) == ["2", "3"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 3


# --------------------------------------------------------------- datasets
def test_truncated_dataset_file_is_reported(data_dir, tmp_path, monkeypatch, capsys):
    for name in os.listdir(data_dir / "mnist"):
        (tmp_path / "mnist").mkdir(exist_ok=True)
        (tmp_path / "mnist" / name).symlink_to(data_dir / "mnist" / name)
    bad = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    bad.unlink()
    bad.write_bytes((data_dir / "mnist" / bad.name).read_bytes()[:100_000])
    monkeypatch.setenv("TFVAE_DATA_DIR", str(tmp_path))
    out = tmp_path / "run"
    assert main(["train", "--limit", "64", "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{bad} is corrupt or truncated (100000 bytes" in err
    assert not (out / "model.keras").exists()


def test_missing_dataset_file_names_the_file_and_the_folder(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("TFVAE_DATA_DIR", str(tmp_path / "data"))
    model = tmp_path / "m.keras"
    checkpoints.save_model(small_vae((28, 28, 1), latent_dim=2), model)
    assert main(["evaluate", "--model", str(model), "--dataset", "mnist"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert str(tmp_path / "data" / "mnist" / "t10k-images-idx3-ubyte.gz") in err
    assert "TFVAE_DATA_DIR" in err and "could not be downloaded" in err


# ------------------------------------------------------------ model files
def test_truncated_model_file_gives_a_clear_error(tmp_path, capsys):
    good = tmp_path / "good.keras"
    checkpoints.save_model(small_vae(), good)
    checkpoints.load_model(good)  # the untruncated file loads
    data = good.read_bytes()
    for keep in (len(data) // 2, len(data) - 10):
        bad = tmp_path / f"bad{keep}.keras"
        bad.write_bytes(data[:keep])
        with pytest.raises(checkpoints.ModelFileError, match="truncated or not a .keras file"):
            checkpoints.load_model(bad)
        assert main(["sample", "--model", str(bad), "--out", str(tmp_path / "s.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"tfvae sample: error: model file {bad} is truncated")
        assert err.count("\n") == 0
    assert not (tmp_path / "s.png").exists()


# --------------------------------------------------------------- atomicity
class _DiskFull(OSError):
    pass


def test_failed_model_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.keras"
    checkpoints.save_model(small_vae(latent_dim=3), path)
    old = path.read_bytes()

    def save_half_then_fail(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(old[: len(old) // 2])  # a partial archive, then the crash
        raise _DiskFull("No space left on device")

    monkeypatch.setattr(keras.Model, "save", save_half_then_fail)
    with pytest.raises(_DiskFull):
        checkpoints.save_model(small_vae(latent_dim=4), path)
    assert path.read_bytes() == old
    assert checkpoints.load_model(path).latent_dim == 3
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no temporary left


def test_failed_json_and_copy_keep_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    files.write_json(path, {"loss": 1.5, "bad": float("nan")})
    assert json.loads(path.read_text()) == {"loss": 1.5, "bad": None}
    old = path.read_bytes()

    def fail(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[:5])
        raise _DiskFull("No space left on device")

    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(_DiskFull):
        files.write_json(path, {"loss": 2.0})
    assert path.read_bytes() == old

    def copy_half(source, target):
        Path(target).write_bytes(b"{")
        raise _DiskFull("No space left on device")

    monkeypatch.undo()
    monkeypatch.setattr("shutil.copyfile", copy_half)
    with pytest.raises(_DiskFull):
        files.copy_file(tmp_path / "other", path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# ---------------------------------------------------------------- NaN loss
class _PoisonWeights(keras.callbacks.Callback):
    """Make the encoder's weights NaN as epoch 2 begins (a diverging step)."""

    def __init__(self, out: Path):
        super().__init__()
        self.out = out
        self.model_after_epoch_1: bytes | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1:
            for weight in self.model.encoder.trainable_weights:
                weight.assign(np.full(weight.shape, np.nan, np.float32))

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.model_after_epoch_1 = (self.out / "model.keras").read_bytes()


def test_nan_loss_stops_training_and_keeps_the_last_good_model(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    out = tmp_path / "run"
    config = training.TrainConfig(limit=256, epochs=3, latent_dim=2, batch_size=64)
    poison = _PoisonWeights(out)
    with pytest.raises(callbacks.TrainingDiverged) as caught:
        training.train(config, out, verbose=0, callbacks=[poison])
    message = str(caught.value)
    # 4 batches per epoch, all in one execution (64 steps per execution): the
    # guard looks once per execution, after epoch 2's 4th batch (step 8).
    assert "the loss became nan by training step 8 (epoch 2, batch 4)" in message
    assert "learning rate too high" in message
    assert f"The model after epoch 1 is kept in {out / 'model.keras'}" in message
    assert (out / "model.keras").read_bytes() == poison.model_after_epoch_1
    assert checkpoints.weights_are_finite(checkpoints.load_model(out / "model.keras"))
    assert json.loads((out / "checkpoints" / "state.json").read_text())["epoch"] == 1
    assert not (out / "metrics.json").exists()


def test_diverging_learning_rate_exits_1_with_the_cause(data_dir, tmp_path, monkeypatch,
                                                        capsys):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    out = tmp_path / "run"
    assert main(["train", "--limit", "256", "--epochs", "2", "--latent-dim", "2",
                 "--learning-rate", "1e30", "--verbose", "0", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert re.search(r"the loss became (nan|inf) by training step \d+ \(epoch 1, batch \d+\)",
                     err)
    assert "No epoch finished, so no model was saved." in err
    assert not (out / "model.keras").exists()
