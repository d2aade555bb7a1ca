"""Likelihoods against hand-written formulas (NumPy/SciPy, float64)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy.special import expit, log_expit

import tfvae
from tfvae.likelihoods import get_likelihood

tfd = tfp.distributions

SHAPE = (3, 2, 1)


def _params_and_data(seed=0, binary=True):
    rng = np.random.default_rng(seed)
    params = rng.normal(size=(5, *SHAPE)).astype(np.float32)
    x = rng.random((5, *SHAPE)).astype(np.float32)
    return params, ((x < 0.5).astype(np.float32) if binary else x)


def _built(likelihood):
    likelihood.build(SHAPE)
    return likelihood


def test_bernoulli_log_prob_is_minus_binary_cross_entropy():
    logits, x = _params_and_data()
    got = _built(tfvae.Bernoulli()).distribution(logits).log_prob(x).numpy()
    l64, x64 = logits.astype(np.float64), x.astype(np.float64)
    bce = -(x64 * log_expit(l64) + (1 - x64) * log_expit(-l64))
    np.testing.assert_allclose(got, -bce.sum(axis=(1, 2, 3)), rtol=1e-5)
    assert got.shape == (5,)


def test_bernoulli_on_grey_pixels_is_cross_entropy_too():
    logits, x = _params_and_data(binary=False)
    got = _built(tfvae.Bernoulli()).distribution(logits).log_prob(x).numpy()
    p = expit(logits.astype(np.float64))
    want = (x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "grey"])
def test_bernoulli_gradient_is_x_minus_sigmoid(binary):
    """The hand-written gradient of the Bernoulli log-prob (d/dl of
    x l - softplus(l) is x - sigmoid(l)) against SciPy, and against TFP's
    autodiff of tfd.Bernoulli, over logits up to +-30."""
    logits, x = _params_and_data(seed=1, binary=binary)
    logits = logits * 10.0
    assert np.abs(logits).max() > 20
    weights = np.arange(1.0, 6.0, dtype=np.float32)  # a different upstream per example
    logits_t = tf.constant(logits)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits_t)
        ours = _built(tfvae.Bernoulli()).distribution(logits_t).log_prob(x) * weights
        tfp_bernoulli = tfd.Independent(tfd.Bernoulli(logits=logits_t, dtype=tf.float32), 3)
        reference = tfp_bernoulli.log_prob(x) * weights
    got = tape.gradient(ours, logits_t).numpy()
    want = weights[:, None, None, None] * (x - expit(logits.astype(np.float64)))
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got, tape.gradient(reference, logits_t).numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-6)


def test_bernoulli_log_prob_broadcasts_like_tfp():
    """Importance sampling scores x [B, ...] under logits [K, B, ...]."""
    logits, x = _params_and_data(seed=2)
    stacked = tf.constant(np.stack([logits, -2.0 * logits]))  # [2, 5, 3, 2, 1]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(stacked)
        ours = _built(tfvae.Bernoulli()).distribution(stacked).log_prob(x)
        reference = tfd.Independent(tfd.Bernoulli(logits=stacked, dtype=tf.float32), 3).log_prob(x)
    assert ours.shape == (2, 5)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(ours, stacked).numpy(),
                               tape.gradient(reference, stacked).numpy(), atol=1e-6)


def test_normal_fixed_scale_is_mse_plus_constant():
    mean, x = _params_and_data(binary=False)
    sigma = 0.3
    got = _built(tfvae.Normal(scale=sigma)).distribution(mean).log_prob(x).numpy()
    n = np.prod(SHAPE)
    sq = ((x.astype(np.float64) - mean) ** 2).sum(axis=(1, 2, 3))
    want = -sq / (2 * sigma**2) - 0.5 * n * np.log(2 * np.pi * sigma**2)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_continuous_bernoulli_matches_its_normalising_constant():
    logits, x = _params_and_data(binary=False)
    got = _built(tfvae.ContinuousBernoulli()).distribution(logits).log_prob(x).numpy()
    lam = expit(logits.astype(np.float64))
    # C(lam) = 2 artanh(1 - 2 lam) / (1 - 2 lam)  (Loaiza-Ganem & Cunningham, eq. 7)
    log_c = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    want = (log_c + x * np.log(lam) + (1 - x) * np.log1p(-lam)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_learned_scale_starts_at_init_and_can_be_per_pixel():
    global_scale = _built(tfvae.Normal(scale="learned", init_scale=0.2))
    np.testing.assert_allclose(global_scale.stddev().numpy(), 0.2, rtol=1e-5)
    assert len(global_scale.trainable_weights) == 1
    per_pixel = _built(tfvae.Normal(scale="learned", per_pixel=True))
    assert per_pixel.stddev().shape == SHAPE


def test_names_resolve_and_unknown_names_list_the_valid_ones():
    assert isinstance(get_likelihood("bernoulli"), tfvae.Bernoulli)
    assert isinstance(get_likelihood("continuous_bernoulli"), tfvae.ContinuousBernoulli)
    assert get_likelihood("normal").learned
    assert get_likelihood("normal_per_pixel").per_pixel
    assert get_likelihood("normal:0.25").scale == 0.25
    for bad in ("gaussian", "normal:-1", "normal:abc", 3):
        with pytest.raises(ValueError, match="Expected one of bernoulli, continuous_bernoulli"):
            get_likelihood(bad)


def test_bad_normal_scales_are_rejected():
    with pytest.raises(ValueError, match="Normal scale must be a finite number > 0, got 0.0"):
        tfvae.Normal(scale=0.0)
    with pytest.raises(ValueError, match="per_pixel=True needs scale='learned'"):
        tfvae.Normal(scale=0.1, per_pixel=True)
