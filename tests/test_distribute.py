"""Data-parallel training: MirroredStrategy and MultiWorkerMirroredStrategy.

Devices must be configured before TensorFlow initialises them, so each
scenario runs in a fresh Python process: this file, run as a script
(``python tests/test_distribute.py mirrored``), prints one JSON line that the
tests below check.

Equality of one training step on 1 device and on 2 replicas needs the same
sampling noise in both runs. Drawing eps per replica gives each replica its
own stream (replica r's example i gets another eps than example i of the
whole batch on one device), so the test model draws no random numbers: its
eps is a fixed function of the example itself (``example_noise``). Everything
else (loss, division by the number of replicas, gradient all-reduce, SGD
update, metrics) is tfvae's own ``train_step``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DATA_SHAPE = (4, 4, 1)
LATENT = 3
BATCH = 16
LR = 0.5


def run_scenario(name: str, timeout: int = 240) -> dict:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), name],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mirrored() -> dict:
    return run_scenario("mirrored")


def test_mirrored_step_equals_single_device_step(mirrored):
    assert mirrored["replicas"] == 2
    single = [np.asarray(w) for w in mirrored["single_weights"]]
    multi = [np.asarray(w) for w in mirrored["mirrored_weights"]]
    start = [np.asarray(w) for w in mirrored["initial_weights"]]
    # The SGD step moved the weights by far more than the tolerance ...
    moved = max(np.abs(s - w0).max() for s, w0 in zip(single, start))
    assert moved > 1e-2
    # ... and identically: w' = w - lr * g, so the gradients are equal (the
    # replicas' gradients are summed and each replica's loss was divided by 2).
    for s, m in zip(single, multi):
        np.testing.assert_allclose(m, s, rtol=1e-4, atol=1e-5)
    assert mirrored["mirrored_loss"] == pytest.approx(mirrored["single_loss"], rel=1e-5)
    assert mirrored["mirrored_elbo"] == pytest.approx(mirrored["single_elbo"], rel=1e-5)


def test_mirrored_fit_and_evaluate_with_model_sampling(mirrored):
    """The plain VAE (random eps from the model's seed stream) trains under
    MirroredStrategy with tfvae's default compile settings."""
    assert np.isfinite(mirrored["plain_losses"]).all()
    assert mirrored["plain_losses"][-1] < mirrored["plain_losses"][0]
    assert np.isfinite(mirrored["plain_eval_loss"])
    # Keras 3.15's multi-step loop fails under MirroredStrategy: the default
    # under a strategy is one step per execution.
    assert mirrored["plain_steps_per_execution"] == 1


def test_fused_adam_under_mirrored_strategy_equals_keras_adam(mirrored):
    """Under a strategy FusedAdam takes Keras's own (mirrored-variable) update."""
    start = [np.asarray(w) for w in mirrored["initial_weights"]]
    fused = [np.asarray(w) for w in mirrored["fused_adam_weights"]]
    keras_adam = [np.asarray(w) for w in mirrored["keras_adam_weights"]]
    assert max(np.abs(f - w0).max() for f, w0 in zip(fused, start)) > 5e-3  # Adam's step ~ lr
    for f, k in zip(fused, keras_adam):
        np.testing.assert_allclose(f, k, atol=1e-6)


def test_multi_worker_strategy_single_worker():
    result = run_scenario("multiworker")
    assert result["replicas"] == 1
    assert result["cluster_workers"] == 1
    assert np.isfinite(result["losses"]).all()
    assert result["losses"][-1] < result["losses"][0]
    assert np.isfinite(result["eval_loss"])


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_env(ports: list[int], index: int) -> dict:
    """The environment of worker ``index`` of a localhost cluster on ``ports``."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    env["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })
    return env


def start_workers(args: list[str], n: int = 2, **popen) -> list[subprocess.Popen]:
    """``n`` processes running ``args`` as the workers of one localhost cluster."""
    ports = free_ports(n)
    return [subprocess.Popen(args, env=cluster_env(ports, i), **popen) for i in range(n)]


def wait_all(processes: list[subprocess.Popen], timeout: int = 300) -> list[str]:
    """Each process's stdout, after checking that it exited with 0."""
    outputs = []
    try:
        for p in processes:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, f"worker exited with {p.returncode}: {err[-3000:]}"
            outputs.append(out)
    finally:
        for p in processes:
            p.kill()
    return outputs


def test_two_worker_processes_train_as_one():
    """Two worker processes on localhost (TF_CONFIG each) train one VAE on
    global batches of 16: their weights equal one process's trained on the
    same batches, and each worker reports the global metrics."""
    reference = run_scenario("one_process")
    workers = start_workers([sys.executable, str(Path(__file__).resolve()), "worker"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [json.loads(out.strip().splitlines()[-1]) for out in wait_all(workers)]
    assert [r["replicas"] for r in results] == [2, 2]
    assert [r["chief"] for r in results] == [True, False]
    # Each worker's steps saw half of each global batch of 16 (4 steps x 3 epochs).
    assert reference["local_batches"] == [BATCH] * 12
    assert [r["local_batches"] for r in results] == [[BATCH // 2] * 12] * 2
    start = [np.asarray(w) for w in reference["initial_weights"]]
    expected = [np.asarray(w) for w in reference["weights"]]
    assert max(np.abs(e - w0).max() for e, w0 in zip(expected, start)) > 1e-2  # it trained
    for result in results:
        for got, want in zip(result["weights"], expected):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result["losses"], reference["losses"], rtol=1e-5)
        assert result["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-5)
    # Mixed precision trains under the cluster (the same losses on both workers) ...
    bf16 = [r["variants"]["mixed_bfloat16"] for r in results]
    assert isinstance(bf16[0], list) and np.isfinite(bf16[0]).all() and bf16[0][-1] < bf16[0][0]
    assert bf16[0] == bf16[1]
    # ... and XLA, which TensorFlow cannot compile there on CPUs, is refused at compile.
    for r in results:
        assert r["variants"]["xla"].startswith("ValueError: jit_compile=True cannot train under "
                                               "MultiWorkerMirroredStrategy on CPUs")


def test_cli_training_in_a_cluster_resumes_after_a_worker_is_killed(tmp_path, data_dir):
    """`python -m tfvae train` as two workers (TF_CONFIG each, one run folder):
    worker 1 is SIGKILLed mid-training, the chief is stopped too, both are
    started again with the same command; training goes on from the chief's
    last backup (Keras BackupAndRestore) and ends with the epochs asked for,
    the epochs trained before the kill kept. Only the chief writes the folder."""
    import signal
    import time

    out, epochs = tmp_path / "run", 6
    args = [sys.executable, "-m", "tfvae", "train", "--dataset", "mnist", "--limit", "1000",
            "--epochs", str(epochs), "--latent-dim", "2", "--hidden-units", "16",
            "--batch-size", "50", "--out", str(out), "--verbose", "0"]

    def start(round_):
        logs = [open(tmp_path / f"worker{i}-{round_}.log", "w") for i in range(2)]
        ports = free_ports(2)
        envs = [dict(cluster_env(ports, i), TFVAE_DATA_DIR=str(data_dir)) for i in range(2)]
        return [subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
                for env, log in zip(envs, logs)]

    def log(i, round_):
        return (tmp_path / f"worker{i}-{round_}.log").read_text()

    state_file = out / "backup" / "backup_state.json"
    workers = start("first")
    deadline = time.monotonic() + 240
    try:
        while True:
            state = json.loads(state_file.read_text()) if state_file.exists() else {}
            if state.get("epoch", 0) >= 2:
                break
            assert all(w.poll() is None for w in workers), log(0, "first") + log(1, "first")
            assert time.monotonic() < deadline, "no backup of epoch 2 within 240 s"
            time.sleep(0.05)
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(timeout=30)
    finally:
        workers[0].kill()  # it cannot go on without worker 1
        workers[0].wait(timeout=30)
    assert workers[1].returncode == -signal.SIGKILL
    saved = json.loads(state_file.read_text())
    assert 2 <= saved["epoch"] < epochs, saved["epoch"]

    workers = start("again")
    for i, w in enumerate(workers):
        assert w.wait(timeout=300) == 0, log(i, "again")
    for i in range(2):
        assert f"after epoch {saved['epoch']} of {epochs}" in log(i, "again")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] and metrics["epochs"] == epochs
    losses = metrics["history"]["loss"]
    assert len(losses) == epochs and np.isfinite(losses).all()
    assert losses[:saved["epoch"]] == saved["history"]["loss"]  # nothing trained was lost
    assert losses[saved["epoch"]] < losses[0]  # and the weights went on from the backup
    assert not (out / "backup").exists()  # deleted once the last epoch was done
    assert "trained with the cluster's chief" in log(1, "again")
    written = {p.name for p in out.iterdir()}
    assert written <= {"run_config.json", "metrics.json", "model.keras", "samples.png",
                       "reconstructions.png", "logs", "checkpoints", ".tfvae.lock"}, written


# ------------------------------------------------------------------ worker
def example_noise(x, latent_dim):
    """A deterministic stand-in for eps ~ N(0, I): a fixed function of x, [B, D]."""
    import tensorflow as tf

    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    rng = np.random.default_rng(123)
    proj = tf.constant(rng.normal(size=(int(np.prod(DATA_SHAPE)), latent_dim)), tf.float32)
    return 1.5 * tf.sin(3.0 * tf.matmul(flat, proj))


def _data(n=BATCH, seed=0):
    return (np.random.default_rng(seed).random((n, *DATA_SHAPE)) < 0.4).astype(np.float32)


def _networks():
    import tfvae

    return tfvae.networks.build_networks("mlp", DATA_SHAPE, LATENT, hidden_units=(16,))


def _fixed_noise_vae_class():
    import tfvae

    class FixedNoiseVAE(tfvae.VAE):
        def elbo_terms(self, x, y=None, training=False, seed=None):
            q = self.posterior(x, training=training)
            z = q.mean() + q.stddev() * example_noise(x, self.latent_dim)
            reconstruction = -self.decode(z, training=training).log_prob(x)
            return reconstruction, self.kl_divergence(q, z)

    return FixedNoiseVAE


def _plain_fit(strategy, x):
    import keras

    import tfvae

    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = tfvae.VAE(*_networks(), LATENT, seed=1)
        model.compile(optimizer=tfvae.FusedAdam(1e-2))
    history = model.fit(x, batch_size=8, epochs=4, verbose=0)
    evaluation = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    return ([float(v) for v in history.history["loss"]], float(evaluation["loss"]),
            int(model.steps_per_execution))


def scenario_mirrored() -> dict:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    import tfvae

    vae_class = _fixed_noise_vae_class()
    x = _data()

    def one_step(strategy, optimizer=lambda: keras.optimizers.SGD(LR)):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = vae_class(*_networks(), LATENT, seed=0)
            model.set_weights(initial)
            model.compile(optimizer=optimizer())
        history = model.fit(x, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        return model, history.history

    keras.utils.set_random_seed(0)
    initial = vae_class(*_networks(), LATENT).get_weights()
    single, single_hist = one_step(tf.distribute.get_strategy())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    multi, multi_hist = one_step(strategy)
    plain_losses, plain_eval, plain_spe = _plain_fit(strategy, _data(64, seed=1))
    fused, _ = one_step(strategy, lambda: tfvae.FusedAdam(1e-2))
    keras_adam, _ = one_step(strategy, lambda: keras.optimizers.Adam(1e-2))
    return {
        "replicas": strategy.num_replicas_in_sync,
        "initial_weights": [w.tolist() for w in initial],
        "single_weights": [w.tolist() for w in single.get_weights()],
        "mirrored_weights": [w.tolist() for w in multi.get_weights()],
        "single_loss": single_hist["loss"][0], "mirrored_loss": multi_hist["loss"][0],
        "single_elbo": single_hist["elbo"][0], "mirrored_elbo": multi_hist["elbo"][0],
        "plain_losses": plain_losses, "plain_eval_loss": plain_eval,
        "plain_steps_per_execution": plain_spe,
        "fused_adam_weights": [w.tolist() for w in fused.get_weights()],
        "keras_adam_weights": [w.tolist() for w in keras_adam.get_weights()],
    }


def scenario_multiworker() -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}"]},
        "task": {"type": "worker", "index": 0},
    })
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    losses, eval_loss, _ = _plain_fit(strategy, _data(64, seed=1))
    return {
        "replicas": strategy.num_replicas_in_sync,
        "cluster_workers": len(strategy.cluster_resolver.cluster_spec().as_dict()["worker"]),
        "losses": losses, "eval_loss": eval_loss,
    }


def _train_fixed_noise(strategy, epochs: int = 3) -> dict:
    """The fixed-noise VAE trained with SGD on 64 examples in unshuffled global
    batches of 16, under ``strategy``."""
    import keras
    import tensorflow as tf

    import tfvae

    seen = []  # examples in each training step's batch on this worker

    class CountingVAE(_fixed_noise_vae_class()):
        def train_step(self, data):
            tf.py_function(lambda n: seen.append(int(n)), [tf.shape(data)[0]], [])
            return super().train_step(data)

    x = _data(64, seed=2)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = CountingVAE(*_networks(), LATENT, seed=0)
        initial = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(LR))
    data = tf.data.Dataset.from_tensor_slices(x).batch(BATCH)
    history = model.fit(data, epochs=epochs, verbose=0)
    evaluation = model.evaluate(data, verbose=0, return_dict=True)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "chief": tfvae.distribute.is_chief(strategy),
        "initial_weights": [w.tolist() for w in initial],
        "weights": [w.tolist() for w in model.get_weights()],
        "losses": [float(v) for v in history.history["loss"]],
        "eval_loss": float(evaluation["loss"]),
        "local_batches": seen,
    }


def _variants(strategy) -> dict:
    """The plain VAE fit under ``strategy`` with XLA, and with the
    mixed_bfloat16 policy: each one's losses, or its error."""
    import keras

    import tfvae

    outcomes = {}
    variants = [("xla", "float32", True), ("mixed_bfloat16", "mixed_bfloat16", False)]
    for name, policy, jit in variants:
        keras.mixed_precision.set_global_policy(policy)
        try:
            with strategy.scope():
                keras.utils.set_random_seed(1)
                model = tfvae.VAE(*_networks(), LATENT, seed=1)
                model.compile(optimizer=tfvae.FusedAdam(1e-2), jit_compile=jit)
            history = model.fit(_data(64, seed=1), batch_size=16, epochs=3, verbose=0)
            outcomes[name] = [float(v) for v in history.history["loss"]]
        except Exception as error:  # reported, for the test to judge
            outcomes[name] = f"{type(error).__name__}: {error}"
        finally:
            keras.mixed_precision.set_global_policy("float32")
    return outcomes


def scenario_one_process() -> dict:
    import tensorflow as tf

    return _train_fixed_noise(tf.distribute.get_strategy())


def scenario_worker() -> dict:
    import tfvae

    strategy = tfvae.distribute.cluster_strategy()
    return {**_train_fixed_noise(strategy), "variants": _variants(strategy)}


if __name__ == "__main__":
    scenario = {"mirrored": scenario_mirrored, "multiworker": scenario_multiworker,
                "one_process": scenario_one_process, "worker": scenario_worker}[sys.argv[1]]
    print(json.dumps(scenario()))
