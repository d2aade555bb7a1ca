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
        def elbo_terms(self, x, training=False, seed=None):
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


if __name__ == "__main__":
    scenario = {"mirrored": scenario_mirrored, "multiworker": scenario_multiworker}[sys.argv[1]]
    print(json.dumps(scenario()))
