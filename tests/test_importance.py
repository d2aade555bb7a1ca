"""Importance-weighted log-likelihood against a model whose log p(x) is exact.

Linear-Gaussian latent model: z ~ N(0, I_d), x = W z + b + N(0, sigma^2 I_n),
so p(x) = N(x; b, W W^T + sigma^2 I) (scipy). With W = Q diag(s) and Q having
orthonormal columns, W^T W is diagonal and the exact posterior
p(z|x) = N(S W^T (x - b) / sigma^2, S), S = (I + W^T W / sigma^2)^-1, is a
diagonal Gaussian, which a tfvae.VAE encoder (a linear Dense layer) can
represent exactly. The decoder is a linear Dense layer and the likelihood is
``Normal(scale=sigma)``; the data are flat vectors (data_shape ``(n,)``).

Statistical comparisons average over N examples and use margins of a few
standard errors of the (paired) per-example differences, so they hold for
other seeds too, not just the fixed one.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from scipy import stats

import tfvae
from tfvae.likelihoods import Normal
from tfvae.model import MIN_POSTERIOR_SCALE

N_DATA, D_LATENT, SIGMA = 6, 2, 0.5
SINGULAR = np.array([1.5, 0.8])
N_EXAMPLES = 300


def _softplus_inv(y):
    return np.log(np.expm1(y))


class LinearGaussian:
    """The generative model, its exact log p(x), posterior and ELBO (NumPy)."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.normal(size=(N_DATA, D_LATENT)))
        self.w = q * SINGULAR  # [n, d], W^T W = diag(SINGULAR^2)
        self.b = rng.normal(size=N_DATA)
        self.post_var = 1.0 / (1.0 + SINGULAR**2 / SIGMA**2)  # diag of S, [d]
        self.rng = rng

    def sample_x(self, n):
        z = self.rng.normal(size=(n, D_LATENT))
        return (z @ self.w.T + self.b + SIGMA * self.rng.normal(size=(n, N_DATA))).astype(
            np.float32)

    def log_px(self, x):
        cov = self.w @ self.w.T + SIGMA**2 * np.eye(N_DATA)
        return stats.multivariate_normal(self.b, cov).logpdf(x.astype(np.float64))

    def posterior_mean_map(self):
        """(A, c) with E[z|x] = x A + c."""
        a = self.w * self.post_var / SIGMA**2  # [n, d]
        return a, -self.b @ a

    def elbo(self, x, loc, var):
        """Closed-form ELBO for q = N(loc, diag(var)), per example."""
        resid = x - loc @ self.w.T - self.b
        trace = (var * SINGULAR**2).sum(-1)  # tr(W diag(var) W^T) = sum var_j s_j^2
        expected_loglik = (-0.5 * N_DATA * math.log(2 * math.pi * SIGMA**2)
                           - ((resid**2).sum(-1) + trace) / (2 * SIGMA**2))
        kl = 0.5 * (var + loc**2 - 1.0 - np.log(var)).sum(-1)
        return expected_loglik - kl


def build_vae(model: LinearGaussian, loc_factor=1.0, scale_factor=1.0, iw_samples=0):
    """A VAE with the model's decoder and a linear encoder.

    ``loc_factor = scale_factor = 1`` is the exact posterior; other values
    give a worse (but still valid) proposal q(z|x) = N(f * m(x), (g sd)^2).
    """
    a, c = model.posterior_mean_map()
    sd = scale_factor * np.sqrt(model.post_var)
    x_in = keras.Input((N_DATA,))
    encoder = keras.Model(x_in, keras.layers.Dense(2 * D_LATENT)(x_in))
    encoder.layers[-1].set_weights([
        np.concatenate([loc_factor * a, np.zeros((N_DATA, D_LATENT))], axis=1),
        np.concatenate([loc_factor * c, _softplus_inv(sd - MIN_POSTERIOR_SCALE)]),
    ])
    z_in = keras.Input((D_LATENT,))
    decoder = keras.Model(z_in, keras.layers.Dense(N_DATA)(z_in))
    decoder.layers[-1].set_weights([model.w.T, model.b])
    vae = tfvae.VAE(encoder, decoder, D_LATENT, likelihood=Normal(scale=SIGMA),
                    iw_samples=iw_samples, seed=0)
    vae.compile()
    return vae


def proposal(model, x, loc_factor, scale_factor):
    """Mean ``[N, d]`` and variance ``[N, d]`` of the encoder of ``build_vae``."""
    a, c = model.posterior_mean_map()
    return loc_factor * (x @ a + c), (scale_factor**2) * model.post_var * np.ones((len(x), 1))


@pytest.fixture(scope="module")
def setup():
    model = LinearGaussian(seed=0)
    x = model.sample_x(N_EXAMPLES)
    return model, x, model.log_px(x)


def mean_and_se(v):
    v = np.asarray(v, np.float64)
    return v.mean(), v.std(ddof=1) / math.sqrt(len(v))


def test_flat_data_shape(setup):
    model, x, _ = setup
    vae = build_vae(model)
    assert vae.data_shape == (N_DATA,)
    assert vae.encode(x[:3]).event_shape == (D_LATENT,)
    assert tuple(vae.decode(np.zeros((4, 3, D_LATENT), np.float32)).event_shape) == (N_DATA,)


def test_exact_posterior_gives_exact_log_likelihood(setup):
    """With q = p(z|x) every weight equals p(x): the estimate is exact for any
    K and seed (up to float32 rounding), also across uneven chunks."""
    model, x, log_px = setup
    vae = build_vae(model)
    est = vae.log_likelihood(x, num_samples=50, batch_size=64, samples_per_chunk=7,
                             verbose=0, seed=1)
    assert est.shape == (N_EXAMPLES,) and est.dtype == np.float64
    np.testing.assert_allclose(est, log_px, atol=2e-4)
    again = vae.log_likelihood(x[:40], num_samples=3, verbose=0, seed=2)
    np.testing.assert_allclose(again, log_px[:40], atol=2e-4)


def test_elbo_terms_match_closed_form_elbo(setup):
    """-(reconstruction + kl) is an unbiased one-sample estimate of the ELBO."""
    model, x, _ = setup
    vae = build_vae(model, loc_factor=0.5, scale_factor=1.8)
    loc, var = proposal(model, x, 0.5, 1.8)
    exact = model.elbo(x, loc, var)
    rec, kl = vae.elbo_terms(x, seed=3)
    diff = -(rec.numpy() + kl.numpy()) - exact
    mean, se = mean_and_se(diff)
    assert abs(mean) < 4 * se + 1e-4, (mean, se)


def test_bound_rises_with_k_and_converges(setup):
    model, x, log_px = setup
    vae = build_vae(model, loc_factor=0.5, scale_factor=1.8)
    loc, var = proposal(model, x, 0.5, 1.8)
    elbo = model.elbo(x, loc, var)
    ks = (1, 10, 1000, 5000)
    bounds = {k: vae.log_likelihood(x, num_samples=k, verbose=0, seed=10 + k) for k in ks}

    gap_elbo, _ = mean_and_se(log_px - elbo)
    assert gap_elbo > 0.5  # the proposal is poor enough for K to matter
    # L_1 is an unbiased estimate of the ELBO.
    mean, se = mean_and_se(bounds[1] - elbo)
    assert abs(mean) < 4 * se, (mean, se)
    # E[L_K] rises with K: each step up is larger than 3 standard errors
    # (from 1000 to 5000 the rise is below what 300 examples can resolve).
    for k_small, k_large in zip(ks[:2], ks[1:3]):
        mean, se = mean_and_se(bounds[k_large] - bounds[k_small])
        assert mean > 3 * se, (k_small, k_large, mean, se)
    # ... and never above log p(x) on average ...
    for k in ks:
        mean, se = mean_and_se(log_px - bounds[k])
        assert mean > -3 * se, (k, mean, se)
    # ... which it approaches: the remaining gap at K=5000 is < 1% of the
    # ELBO's gap and indistinguishable from 0 at the 0.01-nat level.
    mean, se = mean_and_se(log_px - bounds[5000])
    assert mean < 0.01 * gap_elbo and abs(mean) < 0.01 + 3 * se, (mean, se, gap_elbo)


def test_evaluate_reports_the_importance_weighted_bound(setup):
    model, x, log_px = setup
    exact = build_vae(model, iw_samples=20)
    result = exact.evaluate(x, batch_size=100, verbose=0, return_dict=True)
    assert result["iw_elbo"] == pytest.approx(log_px.mean(), abs=1e-3)

    poor = build_vae(model, loc_factor=0.5, scale_factor=1.8, iw_samples=100)
    result = poor.evaluate(x, batch_size=100, verbose=0, return_dict=True)
    reference = poor.log_likelihood(x, num_samples=100, verbose=0, seed=5)
    mean, se = mean_and_se(reference)
    assert result["iw_elbo"] == pytest.approx(mean, abs=4 * se)
    assert result["iw_elbo"] > result["elbo"] + 0.3
    assert result["iw_elbo"] < log_px.mean() + 3 * se


def test_compiled_chunk_equals_a_numpy_computation_on_the_same_draws():
    """The fast path (one XLA-compiled chunk: Philox reparameterised draws,
    TFP log-probs, logsumexp) against the straightforward computation written
    out in NumPy float64 from the same noise, on a Bernoulli MNIST-sized MLP."""
    import tensorflow as tf

    from tests.helpers import small_vae
    from tfvae import importance

    data_shape, latent_dim, k, batch = (28, 28, 1), 5, 40, 6
    vae = small_vae(data_shape, latent_dim, hidden=(32,))
    rng = np.random.default_rng(3)
    x = (rng.random((batch, *data_shape)) < 0.3).astype(np.float32)
    seed = tf.constant([7, 11])
    fast = importance._chunk_logsumexp(vae)(tf.constant(x), k, seed).numpy()

    params = vae.encoder(x).numpy().astype(np.float64)
    loc, raw = np.split(params, 2, axis=-1)
    scale = np.logaddexp(0.0, raw) + MIN_POSTERIOR_SCALE  # softplus
    # The same noise as the compiled path (XLA's Philox stream differs from eager's).
    noise = tf.function(jit_compile=True)(
        lambda: tf.random.stateless_normal([k, batch, latent_dim], seed=seed, alg="philox"))
    eps = noise().numpy().astype(np.float64)
    z = loc + scale * eps  # [K, B, D]
    logits = vae.decoder(z.reshape(-1, latent_dim).astype(np.float32)).numpy()
    logits = logits.astype(np.float64).reshape(k, batch, -1)
    xf = x.reshape(1, batch, -1)
    log_px_z = (xf * logits - np.logaddexp(0.0, logits)).sum(-1)
    log_pz = stats.norm.logpdf(z).sum(-1)
    log_qz = stats.norm.logpdf(z, loc, scale).sum(-1)
    lw = log_px_z + log_pz - log_qz
    reference = lw.max(0) + np.log(np.exp(lw - lw.max(0)).sum(0))
    np.testing.assert_allclose(fast, reference, rtol=2e-6, atol=1e-3)

    # The same draws through the TFP distributions, eagerly, without XLA.
    q = vae.posterior(tf.constant(x))
    straightforward = (vae.decode(z.astype(np.float32)).log_prob(x)
                       + vae.prior.log_prob(z.astype(np.float32))
                       - q.log_prob(z.astype(np.float32)))
    np.testing.assert_allclose(fast, tf.reduce_logsumexp(straightforward, 0).numpy(),
                               rtol=2e-6, atol=1e-3)
