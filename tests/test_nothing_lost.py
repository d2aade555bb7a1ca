"""Issue 15, "nothing lost": the run folder's ownership, a finished run's
protection, every batch checked, numbers checked, one-line errors, the lock,
stale temporaries, and a command line that starts without TensorFlow.

Runs go through ``tfvae.cli.main`` in-process (as a user's command would);
the lock, the file-size limit and the start-up tests need real processes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import matplotlib.image
import numpy as np
import pytest
from helpers import small_vae

import tfvae
from tfvae import callbacks, checkpoints, datasets, networks, plot, runs, training
from tfvae.cli import main
from tfvae.validation import check_data

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--limit", "256", "--latent-dim", "2", "--batch-size", "64", "--verbose", "2"]
_RUNS: dict[str, Path] = {}


def _train(out: Path, epochs: int = 2, *extra: str) -> list[str]:
    return ["train", *QUICK, "--epochs", str(epochs), *extra, "--out", str(out)]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line on stderr, got:\n{err}"
    return err


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _epochs_run(stdout: str, epochs: int) -> list[int]:
    return [int(n) for n in re.findall(rf"^Epoch (\d+)/{epochs}$", stdout, re.M)]


@pytest.fixture
def finished_run(data_dir, tmp_path_factory, tmp_path, monkeypatch) -> Path:
    """A copy of a finished 2-epoch run (4 steps per epoch), trained once per session."""
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    if "finished" not in _RUNS:
        out = tmp_path_factory.mktemp("finished") / "run"
        assert main(_train(out)) == 0
        _RUNS["finished"] = out
    shutil.copytree(_RUNS["finished"], tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def interrupted_run(data_dir, tmp_path_factory, tmp_path, monkeypatch) -> Path:
    """A copy of a 3-epoch run interrupted in epoch 3: checkpoints hold epoch 2."""
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    if "interrupted" not in _RUNS:
        out = tmp_path_factory.mktemp("interrupted") / "run"
        check_batch = callbacks.NonFiniteLossGuard.on_train_batch_end

        def ctrl_c_in_epoch_3(self, batch, logs=None):
            check_batch(self, batch, logs)
            if self._epoch == 2:
                raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(callbacks.NonFiniteLossGuard, "on_train_batch_end", ctrl_c_in_epoch_3)
            assert main(_train(out, 3)) == 130
        assert json.loads((out / "checkpoints" / "state.json").read_text())["epoch"] == 2
        _RUNS["interrupted"] = out
    shutil.copytree(_RUNS["interrupted"], tmp_path / "run")
    return tmp_path / "run"


# ------------------------------------------------- 1. whose folder it is
def test_a_folder_that_is_not_ours_is_refused_and_left_untouched(data_dir, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    out = tmp_path / "mine"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "epoch-0001.keras").write_bytes(b"my own checkpoint")
    (out / "checkpoints" / "state.json").write_text('{"epoch": 1}')
    (out / "model.keras").write_bytes(b"my own model")
    (out / "metrics.json").write_text('{"completed": true}')
    before = _files(out)
    for extra in ([], ["--overwrite"]):
        assert main(_train(out, 2, *extra)) == 2
        err = _one_line(capsys)
        assert f"{out} is not empty (checkpoints, metrics.json, model.keras)" in err
        assert "holds no tfvae run (run_config.json), so nothing in it was touched" in err
        assert _files(out) == before  # nothing changed, nothing added (not even a lock file)


def test_overwrite_removes_only_what_our_runs_write(finished_run, capsys):
    out = finished_run
    (out / "logs" / "other.txt").write_text("a user's notes")
    (out / "notes.txt").write_text("a user's notes")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "keep.keras").write_bytes(b"a user's model")
    old_events = sorted((out / "logs").rglob("events.out.tfevents.*"))
    assert old_events
    assert main(_train(out, 1, "--overwrite")) == 0
    assert (out / "logs" / "other.txt").read_text() == "a user's notes"
    assert (out / "notes.txt").read_text() == "a user's notes"
    assert (out / "checkpoints" / "keep.keras").read_bytes() == b"a user's model"
    assert not any(p.exists() for p in old_events)  # our old TensorBoard logs went
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


# ------------------------------------------------ 2. a finished run stays
@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_finished_run_whose_metrics_were_lost_is_not_trained_again(finished_run, damage,
                                                                     capsys):
    out = finished_run
    model = (out / "model.keras").read_bytes()
    old = json.loads((out / "metrics.json").read_text())
    if damage == "delete":
        (out / "metrics.json").unlink()
    else:
        (out / "metrics.json").write_text('{"train": {"lo')
    assert main(_train(out)) == 0
    printed = capsys.readouterr().out
    assert f"Resuming {out} after epoch 2 of 2" in printed
    assert _epochs_run(printed, 2) == []  # no epoch trained
    assert (out / "model.keras").read_bytes() == model
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] and metrics["epochs"] == 2
    assert metrics["test"]["kl"] == pytest.approx(old["test"]["kl"], rel=1e-4)


def test_a_run_whose_marker_was_deleted_is_not_replaced(finished_run, capsys):
    out = finished_run
    (out / "run_config.json").unlink()
    before = _files(out)
    assert main(_train(out, 2, "--latent-dim", "3")) == 2
    assert "holds no tfvae run (run_config.json)" in _one_line(capsys)
    assert _files(out) == before


@pytest.mark.parametrize("damage", ["garbage state.json", "no state.json",
                                    "no checkpoint file"])
def test_a_damaged_progress_record_resumes_from_the_model_file(interrupted_run, damage,
                                                               capsys):
    out = interrupted_run
    state = out / "checkpoints" / "state.json"
    if damage == "garbage state.json":
        state.write_bytes(b"\x00\x17{not json")
    elif damage == "no state.json":
        state.unlink()
    else:
        (out / "checkpoints" / json.loads(state.read_text())["model"]).unlink()
    assert main(_train(out, 3)) == 0
    printed = capsys.readouterr().out
    assert f"Resuming {out} after epoch 2 of 3 ({out / 'model.keras'})" in printed
    assert _epochs_run(printed, 3) == [3]  # not from epoch 1
    assert int(checkpoints.load_model(out / "model.keras").optimizer.iterations) == 3 * 4


def _steps_9(out: Path) -> None:
    model = checkpoints.load_model(out / "model.keras")
    model.optimizer.iterations.assign(9)
    checkpoints.save_model(model, out / "model.keras")


AMBIGUOUS = {
    "model.keras truncated": (
        lambda out: (out / "model.keras").write_bytes((out / "model.keras").read_bytes()[:999]),
        "has no usable checkpoint and its model.keras cannot be loaded"),
    "model.keras between epochs": (
        _steps_9, "holds 9 training steps, not a whole number of epochs of 4 steps"),
    "only a checkpoint file": (
        lambda out: (out / "model.keras").unlink(),
        "holds epoch-0002.keras but no readable state.json and there is no model.keras"),
}


@pytest.mark.parametrize("case", AMBIGUOUS)
def test_ambiguous_progress_stops_with_one_line_and_changes_nothing(interrupted_run, case,
                                                                    capsys):
    out = interrupted_run
    (out / "checkpoints" / "state.json").unlink()
    damage, expected = AMBIGUOUS[case]
    damage(out)
    before = _files(out)
    capsys.readouterr()
    assert main(_train(out, 3)) == 2
    err = _one_line(capsys)
    assert expected in err and "Nothing was changed; pass --overwrite" in err
    assert _files(out) == before


# ------------------------------------------- 3. every batch is checked
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_every_batch_of_a_pipeline_is_checked(jit_compile):
    model = small_vae()
    model.compile(jit_compile=jit_compile)
    for bad in (np.nan, np.inf, 1.5):
        x = (np.random.default_rng(0).random((256, 4, 4, 1)) < 0.3).astype(np.float32)
        x[200, 1, 2, 0] = bad  # in the 7th of 8 batches: the first one is fine
        pipeline = datasets.make_dataset(x, batch_size=32, shuffle=False)
        message = r"x: .*batch.* has 1 value\(s\) that are NaN, inf or outside the likelihood"
        before = model.get_weights()
        with pytest.raises(ValueError, match=message):
            model.fit(pipeline, epochs=2, verbose=0, shuffle=False)
        assert checkpoints.weights_are_finite(model)
        if jit_compile:  # found after the compiled function ran: no good epoch, initial weights
            for restored, initial in zip(model.get_weights(), before):
                np.testing.assert_array_equal(restored, initial)
        with pytest.raises(ValueError, match=message):
            model.evaluate(pipeline, verbose=0)
    # The optimizer's state was restored too: the model still trains.
    history = model.fit(datasets.make_dataset(x[:64] * 0 + 0.5, batch_size=32), verbose=0,
                        shuffle=False)
    assert np.isfinite(history.history["loss"]).all() and checkpoints.weights_are_finite(model)


class _PoisonInEpoch2(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.after_epoch_1 = [np.array(w) for w in self.model.get_weights()]

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1:
            for weight in self.model.encoder.trainable_weights:
                weight.assign(np.full(weight.shape, np.nan, np.float32))


def test_python_fit_stops_at_a_nan_loss_and_restores_the_last_good_epoch(binary_batch):
    model = small_vae()
    model.compile()
    poison = _PoisonInEpoch2()
    with pytest.raises(tfvae.TrainingDiverged, match="the loss became nan .*epoch 2"):
        model.fit(binary_batch, batch_size=8, epochs=3, verbose=0, callbacks=[poison])
    for restored, good in zip(model.get_weights(), poison.after_epoch_1):
        np.testing.assert_array_equal(restored, good)


# --------------------------------------------------- 4. numbers checked
@pytest.fixture(scope="module")
def model():
    vae = small_vae()
    vae.compile()
    return vae


BAD_NUMBERS = {
    "samples_per_chunk=0": (lambda m, x: m.log_likelihood(x, 5, samples_per_chunk=0, verbose=0),
                            "samples_per_chunk must be an integer >= 1, got 0"),
    "samples_per_chunk=-1": (lambda m, x: m.log_likelihood(x, 5, samples_per_chunk=-1),
                             "samples_per_chunk must be an integer >= 1, got -1"),
    "num_samples=2.5": (lambda m, x: m.log_likelihood(x, 2.5),
                        "num_samples must be an integer >= 1, got 2.5"),
    "empty x (log_likelihood)": (lambda m, x: m.log_likelihood(x[:0], 5), "x is empty"),
    "empty x (importance)": (
        lambda m, x: tfvae.importance.log_likelihood(m, x[:0], 5), "x is empty"),
    "sample(2.5)": (lambda m, x: m.sample(2.5), "n must be an integer >= 1, got 2.5"),
    "Normal(init_scale=-1)": (lambda m, x: tfvae.Normal(init_scale=-1),
                              "Normal init_scale must be a finite number > 0, got -1"),
    "Normal(scale=True)": (lambda m, x: tfvae.Normal(scale=True), "Normal scale must be"),
    "iw_samples=-5": (lambda m, x: small_vae(iw_samples=-5), "iw_samples must be an integer"),
    "beta=True": (lambda m, x: small_vae(beta=True), "beta must be a finite number"),
    "load(limit=-5)": (lambda m, x: datasets.load("mnist", limit=-5),
                       "limit must be an integer >= 1, got -5"),
    "fit on an empty array": (lambda m, x: m.fit(x[:0], verbose=0), "x is empty"),
    "predict on bad input": (lambda m, x: m.predict(x * 255, verbose=0),
                             "values in \\[0, 255\\]"),
}


@pytest.mark.parametrize("case", BAD_NUMBERS)
def test_numeric_arguments_of_the_public_api_are_checked(model, binary_batch, case):
    call, message = BAD_NUMBERS[case]
    with pytest.raises(ValueError, match=message):
        call(model, binary_batch)


def test_numpy_numbers_are_accepted(binary_batch):
    vae = small_vae(beta=np.float32(0.5), iw_samples=np.int64(2))
    assert float(vae.beta) == 0.5
    assert tfvae.Normal(scale=np.float32(0.25)).scale == 0.25
    assert vae.sample(np.int32(3)).shape == (3, 4, 4, 1)


# --------------------------------------------- 5. one line, before work
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_out_of_range_exits_2_and_writes_nothing(seed, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train(out, 1, "--seed", seed)) == 2
    assert f"argument --seed: expected an integer from 0 to 4294967295, got '{seed}'" in \
        _one_line(capsys)
    assert not out.exists()


def test_a_full_disk_during_a_save_is_one_line_and_loses_nothing(data_dir, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    out = tmp_path / "run"
    save = keras.Model.save
    saves = []

    def disk_full_at_the_second_save(self, filepath, *args, **kwargs):
        saves.append(filepath)
        if len(saves) == 2:
            Path(filepath).write_bytes(b"PK\x03\x04 half an archive")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
        return save(self, filepath, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save", disk_full_at_the_second_save)
        assert main(_train(out, 3)) == 1
    err = _one_line(capsys)
    assert err.startswith("tfvae train: error: [Errno 28] No space left on device")
    assert "Files written before it are intact" in err and "Re-run the same command" in err
    assert int(checkpoints.load_model(out / "model.keras").optimizer.iterations) == 4
    assert not [p for p in out.rglob(".*") if p.name != ".tfvae.lock"]  # no temporaries
    assert main(_train(out, 3)) == 0  # and the same command resumes after epoch 1
    assert f"Resuming {out} after epoch 1 of 3" in capsys.readouterr().out


def test_a_file_size_limit_is_one_line(data_dir, tmp_path):
    out = tmp_path / "run"

    def limit_files_to_1_mb():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-m", "tfvae", *_train(out, 1)], cwd=ROOT,
                          env=dict(os.environ, TFVAE_DATA_DIR=str(data_dir)),
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_files_to_1_mb)
    assert done.returncode == 1, done.stderr
    err = done.stderr.strip().splitlines()
    assert err[-1].startswith("tfvae train: error: [Errno 27] File too large")
    if not Path("/proc/driver/nvidia").exists():  # TensorFlow's start-up lines are hidden
        assert len(err) == 1, done.stderr
    assert not (out / "model.keras").exists()


@pytest.mark.parametrize("command", [["sample"], ["evaluate", "--dataset", "mnist"],
                                     ["interpolate", "--dataset", "mnist"]])
def test_an_existing_folder_as_out_is_refused_before_any_work(command, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    # The model does not exist: the output is checked first.
    assert main([*command, "--model", str(tmp_path / "m.keras"), "--out", str(folder)]) == 2
    assert f"argument --out: {folder} is a folder; expected a file name" in _one_line(capsys)


def test_a_model_too_large_for_memory_is_refused_with_the_number(tmp_path, monkeypatch,
                                                                  capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(training, "physical_memory", lambda: 16 * 2**30)
    assert main(_train(out, 1, "--latent-dim", "2000000")) == 2
    params = networks.count_parameters("mlp", (28, 28, 1), 2_000_000)
    err = _one_line(capsys)
    assert f"needs at least {16 * params / 2**30:.1f} GiB" in err
    assert "half of this machine's 16.0 GiB" in err
    assert not out.exists()
    monkeypatch.undo()  # the machine's own memory: 10^9 latent dimensions fit nowhere
    assert main(_train(out, 1, "--latent-dim", "1000000000")) == 2
    assert "needs at least" in _one_line(capsys)


@pytest.mark.parametrize("kind, shape, latent_dim, hidden", [
    ("mlp", (28, 28, 1), 20, None), ("mlp", (28, 20, 1), 5, (200, 100)),
    ("conv", (28, 28, 1), 20, None), ("conv", (28, 20, 1), 3, None)])
def test_parameter_count_matches_the_built_networks(kind, shape, latent_dim, hidden):
    encoder, decoder = networks.build_networks(kind, shape, latent_dim, hidden)
    assert networks.count_parameters(kind, shape, latent_dim, hidden) == \
        encoder.count_params() + decoder.count_params()


# ---------------------------------------------------------- 6. the lock
def test_a_second_train_into_a_locked_folder_is_refused(data_dir, tmp_path, monkeypatch,
                                                        capsys):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tfvae.runs import RunFolder\n"
         "with RunFolder(sys.argv[1]).locked():\n"
         "    print('locked', flush=True); sys.stdin.read()", str(out)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(_train(out, 1)) == 2
        assert (f"{out} is in use by another tfvae process (pid {holder.pid})"
                in _one_line(capsys))
        assert not (out / "run_config.json").exists()
    finally:
        holder.communicate("", timeout=60)
    with runs.RunFolder(out).locked():  # released when its holder ended
        pass


# --------------------------------------------- 7. stale temporaries go
def test_stale_temporaries_of_our_names_are_removed_on_start(interrupted_run, capsys):
    out = interrupted_run
    stale = [out / ".model.keras.x1y2z3.keras", out / ".metrics.json.abc.tmp",
             out / "checkpoints" / ".epoch-0003.keras.q9w8.keras",
             out / "checkpoints" / ".state.json.k2.tmp"]
    for path in stale:
        path.write_bytes(b"\x00" * 1000)
    (out / ".my_dotfile").write_text("a user's")
    assert main(_train(out, 3)) == 0
    assert not any(p.exists() for p in stale)
    assert (out / ".my_dotfile").read_text() == "a user's"


# ------------------------------------------------------------ 8. smaller
def test_out_of_range_message_shows_enough_digits():
    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    x[1, 0, 0, 0] = 1.0000001
    with pytest.raises(ValueError, match=r"values in \[0.5, 1.0000001\]; the likelihood expects "
                                         r"values in \[0, 1\]"):
        check_data(x, (4, 4, 1), (0.0, 1.0))


def test_pngs_are_written_with_the_umask_mode(tmp_path):
    images = np.full((4, 3, 3, 1), 0.5, np.float32)
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(umask)
        try:
            plot.save_image_grid(images, tmp_path / f"{umask:o}.png")
        finally:
            os.umask(old)
        assert (tmp_path / f"{umask:o}.png").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("command", [["sample"], ["interpolate", "--dataset", "mnist"]])
def test_only_png_outputs_are_accepted(command, tmp_path, capsys):
    assert main([*command, "--model", "m.keras", "--out", str(tmp_path / "s.jpg")]) == 2
    assert "argument --out: expected a .png file name, got" in _one_line(capsys)
    assert not list(tmp_path.iterdir())


def test_the_likelihood_is_normalised_in_the_run_identity(finished_run, capsys):
    config = tfvae.TrainConfig(likelihood=" Continuous_Bernoulli")
    assert config.identity()["likelihood"] == "continuous_bernoulli"
    assert main(_train(finished_run, 2, "--likelihood", "BERNOULLI")) == 0
    assert "already holds this finished run" in capsys.readouterr().out


def test_a_new_nll_samples_on_a_finished_run_is_evaluated(finished_run, capsys):
    out = finished_run
    model = (out / "model.keras").read_bytes()
    old = json.loads((out / "metrics.json").read_text())
    assert "nll" not in old["test"]
    assert main(_train(out, 2, "--nll-samples", "5")) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["nll_samples"] == 5 and np.isfinite(metrics["test"]["nll"])
    assert "it was not trained again. Test NLL (5 importance samples): " \
        f"{metrics['test']['nll']:.4f}" in printed
    assert metrics["test"]["elbo"] == old["test"]["elbo"]  # the rest is kept
    assert metrics["history"] == old["history"]
    assert (out / "model.keras").read_bytes() == model
    written = (out / "metrics.json").stat().st_mtime_ns
    assert main(_train(out, 2, "--nll-samples", "5")) == 0  # already there: nothing to do
    assert (out / "metrics.json").stat().st_mtime_ns == written


@pytest.mark.parametrize("command", [["train"], ["sample", "--model", "m.keras"],
                                     ["evaluate", "--model", "m.keras"],
                                     ["interpolate", "--model", "m.keras"]])
def test_an_empty_out_is_refused(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--out", ""]) == 2
    assert "argument --out: expected a" in _one_line(capsys)
    assert not list(tmp_path.iterdir())


def test_each_help_lists_its_own_exit_codes(capsys):
    helps = {}
    for command in ("train", "sample", "evaluate", "interpolate"):
        assert main([command, "--help"]) == 0
        helps[command] = capsys.readouterr().out.split("exit codes:")[1]
    assert main(["sample", "--help"]) == 0
    assert "--draws" in capsys.readouterr().out.replace("\n", " ")
    assert "training diverged" in helps["train"] and "resume" in helps["train"]
    for command in ("sample", "evaluate", "interpolate"):
        assert "training diverged" not in helps[command]
        assert "resume" not in helps[command] and "run folder" not in helps[command]
        assert "130" in helps[command] and "SIGTERM" in helps[command]
    assert "dataset" not in helps["sample"]


def test_sigterm_stops_like_ctrl_c(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    check_batch = callbacks.NonFiniteLossGuard.on_train_batch_end

    def sigterm_in_epoch_2(self, batch, logs=None):
        check_batch(self, batch, logs)
        if self._epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(callbacks.NonFiniteLossGuard, "on_train_batch_end", sigterm_in_epoch_2)
    assert main(_train(tmp_path / "run", 3)) == 130
    err = capsys.readouterr().err.strip()
    assert err == "tfvae train: interrupted. Re-run the same command to resume."
    assert signal.getsignal(signal.SIGTERM) is before  # restored for the caller


def test_sample_writes_mean_images_by_default_and_draws_on_request(finished_run, tmp_path):
    model = str(finished_run / "model.keras")
    paths = {kind: tmp_path / f"{kind}.png" for kind in ("default", "mean", "draws")}
    for kind, path in paths.items():
        extra = [] if kind == "default" else [f"--{kind}"]
        assert main(["sample", "--model", model, "-n", "9", "--seed", "1", *extra,
                     "--out", str(path)]) == 0
    images = {kind: matplotlib.image.imread(path)[..., 0] for kind, path in paths.items()}
    np.testing.assert_array_equal(images["default"], images["mean"])
    assert np.isin(images["default"], [0.0, 1.0], invert=True).any()  # grey: E[x|z]
    assert np.isin(images["draws"], [0.0, 1.0]).all()  # Bernoulli draws: black or white


# ------------------------------------------------- what a new user meets
@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["train", "--help"], 0),
                                        (["train", "--epochs", "-1"], 2),
                                        (["sample", "--model", "m.keras", "--out", "s.jpg"], 2)])
def test_help_and_argument_errors_come_before_tensorflow(argv, code, tmp_path):
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tfvae", *argv],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")]
    assert "tfvae.cli" in imported
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")]
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert len(errors) == (1 if code else 0), errors
    assert not list(tmp_path.iterdir())


def test_import_tfvae_still_registers_the_model_classes_with_keras(tmp_path):
    checkpoints.save_model(small_vae(), tmp_path / "m.keras")
    done = subprocess.run(
        [sys.executable, "-c", "import tfvae, keras, sys\n"
         "print(type(keras.models.load_model(sys.argv[1])).__name__, "
         "tfvae.checkpoints.load_model.__name__)", str(tmp_path / "m.keras")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["VAE", "load_model"], done.stderr
