"""FusedAdam: Keras's Adam, one ResourceApplyAdam kernel per variable.

References: a hand-written NumPy Adam (Kingma & Ba 2015, Algorithm 1, with
Keras's epsilon placement) and ``keras.optimizers.Adam`` itself. Float32
rounding differs between one fused kernel and a chain of ops; over 30 steps
the weights drift apart by ~1e-6 while each step moves them by ~lr = 1e-2, so
the 1e-5 tolerance catches any wrong term (a missing bias correction changes
the first step by a factor of 10).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tests.helpers import small_vae
from tfvae.optimizers import FusedAdam, get_optimizer

LR, STEPS = 1e-2, 30


def numpy_adam(w0, grads, lr=LR, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    w, m, v = w0.astype(np.float64), np.zeros_like(w0, np.float64), np.zeros_like(w0, np.float64)
    for t, g in enumerate(grads, start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        w = w - alpha * m / (np.sqrt(v) + epsilon)
    return w


def _gradients(shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(STEPS)]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_fused_adam_matches_numpy_adam(compiled):
    w0 = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    grads = _gradients(w0.shape)
    variable = keras.Variable(w0)
    optimizer = FusedAdam(LR)
    optimizer.build([variable])

    def step(g):
        optimizer.apply([g], [variable])

    step = tf.function(step) if compiled else step
    for g in grads:
        step(tf.constant(g))
    expected = numpy_adam(w0, grads)
    assert np.abs(expected - w0).max() > 0.1  # the steps moved the weights
    np.testing.assert_allclose(variable.numpy(), expected, atol=1e-5)
    assert int(optimizer.iterations) == STEPS


def test_amsgrad_falls_back_to_keras_adam():
    w0 = np.random.default_rng(2).normal(size=(6,)).astype(np.float32)
    # Gradients that shrink tenfold after 10 steps, and a short memory of v
    # (beta_2 = 0.5): v falls, AMSGrad's running max of v does not.
    grads = [g * (1.0 if t < 10 else 0.1) for t, g in enumerate(_gradients(w0.shape, seed=3))]
    fused, plain = keras.Variable(w0), keras.Variable(w0)
    fused_opt, plain_opt = (FusedAdam(LR, beta_2=0.5, amsgrad=True),
                             keras.optimizers.Adam(LR, beta_2=0.5, amsgrad=True))
    for g in grads:
        fused_opt.apply([g], [fused])
        plain_opt.apply([g], [plain])
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), atol=1e-6)
    # AMSGrad's update differs from Adam's, so the fallback was taken.
    assert np.abs(fused.numpy() - numpy_adam(w0, grads, beta_2=0.5)).max() > 1e-2


@pytest.mark.parametrize("options", [
    {"weight_decay": 0.05}, {"clipnorm": 0.5}, {"gradient_accumulation_steps": 3},
    {"use_ema": True, "ema_overwrite_frequency": 4},
    {"learning_rate": keras.optimizers.schedules.ExponentialDecay(LR, 5, 0.5)},
], ids=["weight_decay", "clipnorm", "accumulation", "ema", "schedule"])
def test_keras_options_around_the_update_work_as_for_adam(options):
    """The docstring's claim: Keras handles these around ``update_step``."""
    w0 = np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)
    kwargs = {"learning_rate": LR, **options}
    fused, plain = keras.Variable(w0), keras.Variable(w0)
    fused_opt, plain_opt = FusedAdam(**kwargs), keras.optimizers.Adam(**kwargs)

    @tf.function
    def step(g):
        fused_opt.apply([g], [fused])
        plain_opt.apply([g], [plain])

    for g in _gradients(w0.shape, seed=5)[:12]:
        step(tf.constant(3.0 * g))
    assert np.abs(fused.numpy() - w0).max() > 1e-2
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), atol=1e-6)


def test_get_optimizer():
    assert type(get_optimizer("adam")) is FusedAdam
    assert type(get_optimizer("Adam")) is FusedAdam
    assert isinstance(get_optimizer("sgd"), keras.optimizers.SGD)
    mine = keras.optimizers.Adam(0.5)
    assert get_optimizer(mine) is mine


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_vae_default_optimizer_trains_like_keras_adam(binary_batch, jit_compile):
    def fit(optimizer):
        model = small_vae(seed=0)
        if optimizer is None:
            model.compile(jit_compile=jit_compile)
        else:
            model.compile(optimizer=optimizer, jit_compile=jit_compile)
        start = model.get_weights()
        model.fit(binary_batch, batch_size=8, epochs=3, shuffle=False, verbose=0)
        return model, start

    default, start = fit(None)
    reference, _ = fit(keras.optimizers.Adam())
    assert type(default.optimizer) is FusedAdam
    assert type(reference.optimizer) is keras.optimizers.Adam
    moved = max(np.abs(w - s).max() for w, s in zip(default.get_weights(), start))
    assert moved > 1e-3
    for w, r in zip(default.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(w, r, atol=1e-5)


def test_saved_model_keeps_fused_adam_and_its_state(tmp_path, binary_batch):
    model = small_vae(seed=0)
    model.compile()
    model.fit(binary_batch, batch_size=8, epochs=2, verbose=0)
    model.save(tmp_path / "vae.keras")
    loaded = keras.models.load_model(tmp_path / "vae.keras")
    assert type(loaded.optimizer) is FusedAdam
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) > 0
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_loss_scaling_wraps_fused_adam(binary_batch):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        runs = []
        for optimizer in ("adam", keras.optimizers.Adam()):
            model = small_vae(seed=0)
            model.compile(optimizer=optimizer)
            start = model.get_weights()
            model.fit(binary_batch, batch_size=8, epochs=2, shuffle=False, verbose=0)
            runs.append(model)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    fused, reference = runs
    assert isinstance(fused.optimizer, keras.optimizers.LossScaleOptimizer)
    assert type(fused.optimizer.inner_optimizer) is FusedAdam
    assert max(np.abs(w - s).max() for w, s in zip(fused.get_weights(), start)) > 1e-3
    for w, r in zip(fused.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(w, r, atol=1e-4)


def test_exported_at_top_level():
    assert tfvae.FusedAdam is FusedAdam
