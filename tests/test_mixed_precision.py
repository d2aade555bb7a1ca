"""Mixed precision: bf16/fp16 networks, float32 distributions, loss scaling.

Under a ``mixed_*`` policy Keras layers compute in 16 bits with float32
variables; tfvae casts the encoder and decoder outputs to float32 before
building q(z|x) and p(x|z), so log-probabilities, KL and the loss are float32.

Tolerance against float32 training: bfloat16 keeps 8 significant bits
(relative rounding 2**-9 ~ 0.2% per value), float16 keeps 11 (~0.05%). The
per-example loss sums 64 per-pixel terms computed from 16-bit logits, whose
rounding errors partly cancel. Over 8 SGD steps from the same weights with the
same noise we saw at most 0.06% (bf16) and 0.002% (fp16) relative difference
in the loss; we allow 0.5% and 0.1%: room for other CPUs/versions, yet far
below the ~12% the loss falls over those steps, so a step that did not update
(or updated with wrongly scaled gradients) fails.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae

DATA_SHAPE = (8, 8, 1)
LATENT = 4
STEPS = 8


@pytest.fixture
def policy():
    """Set a global dtype policy for one test and always restore float32."""
    previous = keras.mixed_precision.global_policy()

    def set_policy(name):
        keras.mixed_precision.set_global_policy(name)

    yield set_policy
    keras.mixed_precision.set_global_policy(previous)


def _data():
    rng = np.random.default_rng(0)
    return (rng.random((32, *DATA_SHAPE)) < 0.3).astype(np.float32)


def _model(weights=None, optimizer=None) -> tfvae.VAE:
    keras.utils.set_random_seed(0)
    encoder, decoder = tfvae.networks.build_networks("mlp", DATA_SHAPE, LATENT,
                                                     hidden_units=(32,))
    model = tfvae.VAE(encoder, decoder, LATENT, seed=0)
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1))
    return model


def _train(model, x) -> np.ndarray:
    """The loss of each of STEPS steps (metrics reset each step: Keras versions
    differ in whether ``train_on_batch`` reports a running mean)."""
    losses = []
    for _ in range(STEPS):
        model.reset_metrics()
        losses.append(model.train_on_batch(x, return_dict=True)["loss"])
    return np.array(losses)


@pytest.fixture(scope="module")
def float32_run():
    keras.mixed_precision.set_global_policy("float32")
    model = _model()
    weights = model.get_weights()
    losses = _train(model, _data())
    assert losses[-1] < 0.9 * losses[0]  # the steps move the model (by ~12%)
    return weights, losses


def test_bfloat16_computes_in_bf16_with_float32_distributions(policy, float32_run):
    policy("mixed_bfloat16")
    weights, reference = float32_run
    model = _model(weights)
    x = _data()
    assert model.encoder(x).dtype == tf.bfloat16
    assert model.decoder(np.zeros((2, LATENT), np.float32)).dtype == tf.bfloat16
    q = model.posterior(x)
    assert q.loc.dtype == tf.float32 and q.scale.diag.dtype == tf.float32
    p = model.decode(q.sample(seed=1))
    assert p.dtype == tf.float32 and p.log_prob(x).dtype == tf.float32
    reconstruction, kl = model.elbo_terms(x, seed=2)
    assert reconstruction.dtype == tf.float32 and kl.dtype == tf.float32
    assert all(v.dtype == "float32" for v in model.trainable_variables)

    losses = _train(model, x)
    assert np.isfinite(losses).all()
    np.testing.assert_allclose(losses, reference, rtol=5e-3)
    assert model.log_likelihood(x[:4], num_samples=8, verbose=0).dtype == np.float64


def test_float16_uses_loss_scaling(policy, float32_run):
    policy("mixed_float16")
    weights, reference = float32_run
    model = _model(weights)
    # Keras wraps the optimizer under mixed_float16; train_step scales the
    # loss with it and the optimizer unscales the gradients before SGD.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.encoder(_data()).dtype == tf.float16
    losses = _train(model, _data())
    assert np.isfinite(losses).all()
    np.testing.assert_allclose(losses, reference, rtol=1e-3)
    assert float(model.optimizer.dynamic_scale) > 1.0  # scaling was active, no overflow
