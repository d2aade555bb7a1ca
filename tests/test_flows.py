"""Inverse autoregressive flow posteriors (tfvae.flows), checked against autodiff and NumPy.

MADE's autoregressive property and the flow's triangular steps are read off
Jacobians from ``tf.GradientTape``; the log-determinant is compared with
``np.linalg.slogdet`` of the autodiff Jacobian, and log q(z|x) with the
change of variables computed by SciPy/NumPy from the base Gaussian.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import small_vae
from scipy import stats

import tfvae
from tfvae import importance, latent, training
from tfvae.config import TrainConfig
from tfvae.flows import MADE, FlowPosterior, InverseAutoregressiveFlow, made_masks

D = 5


def _jacobian(fn, z: np.ndarray) -> np.ndarray:
    """``d fn(z)[b, i] / d z[b, j]``: ``[B, D_out, D]`` by autodiff."""
    z = tf.constant(z, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = fn(z)
    return tape.batch_jacobian(out, z).numpy().astype(np.float64)


def _flow(num_steps=2, hidden=(16, 16), seed=0, latent_dim=D) -> InverseAutoregressiveFlow:
    keras.utils.set_random_seed(seed)
    flow = InverseAutoregressiveFlow(num_steps, hidden)
    flow.build_for(latent_dim)
    return flow


def _z(n=6, seed=1, latent_dim=D) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, latent_dim)).astype(np.float32)


@pytest.mark.parametrize("reverse", [False, True])
def test_made_output_d_depends_on_the_inputs_before_d_only(reverse):
    keras.utils.set_random_seed(0)
    made = MADE((16, 16), num_outputs=2, reverse=reverse)
    made.build((None, D))
    order = np.arange(D)[::-1] if reverse else np.arange(D)  # order[i]: input i's position
    earlier = order[None, :] < order[:, None]  # [out d, in j]: j comes before d
    for k in range(2):
        jac = _jacobian(lambda z, k=k: made(z)[k], _z())  # [B, D, D]
        np.testing.assert_array_equal(jac[:, ~earlier], 0.0)  # exact zeros: masked weights
        assert np.all(np.abs(jac[:, earlier]) > 1e-6)  # and every allowed path is used


def test_made_masks_connect_exactly_the_earlier_inputs():
    for hidden in [(3,), (8, 2), (1, 7, 9)]:
        masks = made_masks(4, hidden, num_outputs=1)
        paths = masks[0]
        for mask in masks[1:]:
            paths = paths @ mask  # [input j, output d]: number of paths from j to d
        # With a layer narrower than D - 1 some earlier inputs are not reached; none later are.
        assert not np.any(paths[np.tril_indices(4)] > 0)  # j >= d
        if min(hidden) >= 3:
            assert np.all(paths[np.triu_indices(4, 1)] > 0)  # j < d


def test_each_step_is_triangular_and_the_log_det_is_log_abs_det_of_the_jacobian():
    flow, z = _flow(num_steps=3), _z()
    for t, lower in [(0, True), (1, False), (2, True)]:  # the order reverses between steps
        jac = _jacobian(lambda v, t=t: flow.step(t, v)[0], z)
        off = np.triu_indices(D, 1) if lower else np.tril_indices(D, -1)
        np.testing.assert_array_equal(jac[:, off[0], off[1]], 0.0)
        gate = np.diagonal(jac, axis1=1, axis2=2)
        assert np.all((gate > 0) & (gate < 1))
        np.testing.assert_allclose(flow.step(t, z)[1], np.log(gate).sum(-1), rtol=1e-5)
    jac = _jacobian(lambda v: flow(v)[0], z)
    sign, logdet = np.linalg.slogdet(jac)
    np.testing.assert_array_equal(sign, 1.0)
    np.testing.assert_allclose(flow(z)[1], logdet, rtol=1e-5, atol=1e-5)


def test_a_one_step_flow_has_a_lower_triangular_jacobian():
    flow, z = _flow(num_steps=1), _z()
    jac = _jacobian(lambda v: flow(v)[0], z)
    upper, lower = np.triu(np.ones((D, D)), 1) > 0, np.tril(np.ones((D, D)), -1) > 0
    np.testing.assert_array_equal(jac[:, upper], 0.0)
    assert np.all(np.abs(jac[:, lower]) > 1e-6)


def test_the_flow_is_invertible():
    flow, z = _flow(num_steps=3), _z(n=20) * 3
    y = flow(z)[0]
    assert np.abs(np.asarray(y) - z).max() > 0.1  # the flow moved the points
    np.testing.assert_allclose(flow.inverse(y), z, atol=1e-4)


def _flow_vae(**kwargs):
    return small_vae(latent_dim=D, flow=InverseAutoregressiveFlow(2, (16, 16)), **kwargs)


def _reference_log_q(model, q, z0: np.ndarray) -> np.ndarray:
    """log N(z0; mu, sigma^2) - log|det df/dz0| in SciPy/NumPy: ``[..., B]``."""
    loc = np.asarray(q.distribution.mean(), np.float64)
    scale = np.asarray(q.distribution.stddev(), np.float64)
    base = stats.norm.logpdf(z0, loc, scale).sum(-1)
    flat = z0.reshape(-1, D)
    jac = _jacobian(lambda v: model.flow(v)[0], flat)
    return base - np.linalg.slogdet(jac)[1].reshape(base.shape)


def test_log_q_is_the_change_of_variables_of_the_base_gaussian(binary_batch):
    model = _flow_vae()
    x = binary_batch[:8]
    q = model.encode(x)
    assert isinstance(q, FlowPosterior)
    rng = np.random.default_rng(2)
    z0 = (np.asarray(q.distribution.mean())
          + np.asarray(q.distribution.stddev()) * rng.normal(size=(3, 8, D))).astype(np.float32)
    z = np.asarray(model.flow(z0)[0])  # [K, B, D]
    expected = _reference_log_q(model, q, z0.astype(np.float64))
    # A fresh tensor: no cached draw, so log_prob inverts the flow.
    np.testing.assert_allclose(q.log_prob(tf.constant(z)), expected, rtol=1e-4, atol=1e-4)


def test_log_q_of_drawn_points_from_the_cache_equals_log_q_by_inversion(binary_batch):
    model = _flow_vae()
    x = binary_batch[:8]
    q = model.posterior(x)
    for z in [q.sample(seed=(1, 2)), importance.sample_posterior(q, 4, tf.constant([3, 4]))]:
        np.testing.assert_allclose(q.log_prob(z), q.log_prob(tf.constant(z.numpy())),
                                   rtol=1e-4, atol=1e-4)
    # The importance weights too: decoder and prior terms plus the cached log q.
    seed = tf.constant([5, 6])
    z = importance.sample_posterior(q, 4, seed).numpy()
    manual = (model.decode(z).log_prob(x) + model.prior.log_prob(z)
              - q.log_prob(tf.constant(z)))
    np.testing.assert_allclose(importance.log_weights(model, x, 4, seed), manual, rtol=1e-4,
                               atol=1e-3)


def test_the_posterior_mean_is_the_flow_of_the_base_mean(binary_batch):
    model = _flow_vae()
    x = binary_batch[:8]
    base_mean = np.asarray(model.encode(x).distribution.mean())
    expected = np.asarray(model.flow(base_mean)[0])
    np.testing.assert_allclose(latent.posterior_means(model, x, batch_size=3), expected,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.reconstruct(x), model.decode(expected).mean(), rtol=1e-5)
    assert latent.interpolate(model, x[0], x[1], steps=3).shape == (3, 4, 4, 1)


def test_without_a_flow_the_posterior_is_the_diagonal_gaussian(binary_batch):
    model = small_vae(latent_dim=D)
    assert model.flow is None and model.analytic_kl
    assert type(model.posterior(binary_batch)).__name__ == "MultivariateNormalDiag"
    assert "flow" in model.get_config() and model.get_config()["flow"] is None


def test_fit_under_xla_with_a_flow(binary_batch):
    model = _flow_vae(seed=0)
    model.compile(jit_compile=True, steps_per_execution=2)
    history = model.fit(binary_batch, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_fit_save_load_and_log_likelihood_with_a_flow(binary_batch, tmp_path):
    model = _flow_vae(seed=0)
    assert not model.analytic_kl  # KL by Monte Carlo: q has no closed form
    model.compile(steps_per_execution=2)
    x = np.concatenate([binary_batch] * 4)
    history = model.fit(x, epochs=2, batch_size=32, verbose=0)
    assert all(np.isfinite(history.history["loss"]))

    path = tmp_path / "iaf.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.flow, InverseAutoregressiveFlow)
    assert (loaded.flow.num_steps, loaded.flow.hidden_units) == (2, (16, 16))
    z = tf.constant(_z(n=len(binary_batch)))
    np.testing.assert_allclose(loaded.encode(binary_batch).log_prob(z),
                               model.encode(binary_batch).log_prob(z), rtol=1e-5, atol=1e-5)

    log_px = model.log_likelihood(binary_batch, num_samples=64, verbose=0)  # under XLA
    copies = 32  # ELBO per example: the mean of 32 one-sample estimates, in one call
    terms = model.elbo_terms(np.concatenate([binary_batch] * copies), seed=1)
    elbo = -np.sum(terms, axis=0).reshape(copies, len(binary_batch)).mean(0)
    assert np.all(np.isfinite(log_px)) and np.all(np.isfinite(elbo))
    gap = log_px - elbo  # E[L_64] >= ELBO for each example
    assert gap.mean() > 0 and gap.mean() > 2 * gap.std() / math.sqrt(len(gap))


def test_bad_flow_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="flow must be None or a tfvae.flows"):
        small_vae(flow="iaf")
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        InverseAutoregressiveFlow(0)
    with pytest.raises(ValueError, match="hidden_units must be an integer >= 1"):
        InverseAutoregressiveFlow(2, (16, 0))
    with pytest.raises(ValueError, match="hidden_units must be a sequence"):
        InverseAutoregressiveFlow(2, 16)
    flow = _flow(latent_dim=3)
    with pytest.raises(ValueError, match="built for latent_dim 3, not 5"):
        small_vae(latent_dim=D, flow=flow)
    # Free bits need a per-dimension KL, which a flow posterior lacks: refused when built.
    with pytest.raises(ValueError, match="free_bits needs .* flow posterior"):
        small_vae(latent_dim=D, flow=_flow(latent_dim=D), free_bits=0.1)
    with pytest.raises(ValueError, match="free_bits needs .*iaf_steps=2"):
        TrainConfig(free_bits=0.1, iaf_steps=2)
    with pytest.raises(ValueError, match="free_bits needs .*prior='mog'"):
        TrainConfig(free_bits=0.1, prior="mog")


def test_train_config_iaf_options():
    with pytest.raises(ValueError, match="iaf_steps must be an integer >= 0"):
        TrainConfig(iaf_steps=-1)
    with pytest.raises(ValueError, match="iaf_hidden_units must be positive integers"):
        TrainConfig(iaf_steps=1, iaf_hidden_units=(8, 0))
    with pytest.raises(ValueError, match="iaf_steps is 0"):
        TrainConfig(iaf_hidden_units=(8,))
    assert training.build_flow(TrainConfig()) is None
    config = TrainConfig(iaf_steps=2, iaf_hidden_units=[8, 8], latent_dim=3, hidden_units=(8,))
    assert config.identity()["iaf_hidden_units"] == [8, 8]
    model = training.build_vae(config, (4, 4, 1))
    assert (model.flow.num_steps, model.flow.hidden_units) == (2, (8, 8))
    flow_weights = sum(int(np.prod(w.shape)) for w in model.flow.weights)
    assert flow_weights == tfvae.flows.count_parameters(3, 2, (8, 8))


def test_cli_parses_the_iaf_options():
    from tfvae.cli import build_parser

    args = build_parser().parse_args(["train", "--iaf-steps", "2", "--iaf-hidden-units", "64,32"])
    assert (args.iaf_steps, args.iaf_hidden_units) == (2, (64, 32))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--iaf-hidden-units", "64,x"])
