"""Learned priors (mixture of Gaussians, VampPrior) against NumPy/SciPy densities,
Monte-Carlo moments and closed forms; training, saving, the command line."""

from __future__ import annotations

import contextlib
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from helpers import small_vae
from scipy.special import expit, logsumexp, softplus
from scipy.stats import norm

import tfvae
from tfvae import config, priors
from tfvae.cli import main
from tfvae.priors import MixtureOfGaussians, VampPrior, get_prior
from tfvae.seeds import stateless_seed, subset_indices

tfd = tfp.distributions


def _random_mog(num_components=3, latent_dim=2, seed=0) -> MixtureOfGaussians:
    """A built mixture with unequal weights, means and scales."""
    rng = np.random.default_rng(seed)
    prior = MixtureOfGaussians(num_components)
    prior.build_for(latent_dim)
    prior.logits.assign(rng.normal(size=num_components).astype(np.float32))
    prior.means.assign(rng.normal(0, 2, size=(num_components, latent_dim)).astype(np.float32))
    prior.raw_scales.assign(rng.normal(0, 0.5, size=(num_components, latent_dim))
                            .astype(np.float32))
    return prior


def _numpy_mog(prior):
    """Weights [K], means [K, D], standard deviations [K, D] in float64."""
    logits = prior.logits.numpy().astype(np.float64)
    weights = np.exp(logits - logsumexp(logits))
    scales = softplus(prior.raw_scales.numpy().astype(np.float64)) + priors.MIN_PRIOR_SCALE
    return weights, prior.means.numpy().astype(np.float64), scales


def _numpy_mixture_log_prob(z, log_weights, means, scales):
    """log sum_k w_k N(z; mu_k, diag s_k^2) for z [N, D]: [N]."""
    per_component = norm.logpdf(z[:, None, :], means[None], scales[None]).sum(-1)  # [N, K]
    return logsumexp(per_component + log_weights[None], axis=1)


@contextlib.contextmanager
def _no_user_warnings():
    """A UserWarning (e.g. "using the Monte-Carlo estimate") fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        yield


# ------------------------------------------------------------ mixture of Gaussians
def test_mog_log_prob_matches_scipy_mixture_density():
    prior = _random_mog()
    weights, means, scales = _numpy_mog(prior)
    z = np.random.default_rng(1).normal(0, 3, size=(50, 2))
    want = _numpy_mixture_log_prob(z, np.log(weights), means, scales)
    got = prior.distribution().log_prob(z.astype(np.float32)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_mog_samples_have_the_mixtures_mean_and_covariance():
    prior = _random_mog()
    weights, means, scales = _numpy_mog(prior)
    mean = weights @ means
    second = np.einsum("k,kd,ke->de", weights, means, means) + np.diag(weights @ scales**2)
    cov = second - np.outer(mean, mean)
    n = 100_000
    z = prior.distribution().sample(n, seed=stateless_seed(3)).numpy().astype(np.float64)
    centred = z - z.mean(0)
    mean_error = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(z.mean(0) - mean) < 5 * mean_error), (z.mean(0), mean)
    products = centred[:, :, None] * centred[:, None, :]  # [n, D, D]
    cov_error = products.std(0) / np.sqrt(n)
    assert np.all(np.abs(products.mean(0) - cov) < 5 * cov_error), (products.mean(0), cov)


def test_mog_starts_with_equal_weights_unit_scales_and_spread_means():
    prior = MixtureOfGaussians(4)
    prior.build_for(3)
    weights, means, scales = _numpy_mog(prior)
    np.testing.assert_allclose(weights, 0.25)
    np.testing.assert_allclose(scales, 1.0, rtol=1e-6)
    assert np.unique(means.round(6), axis=0).shape == (4, 3)
    again = MixtureOfGaussians(4)
    again.build_for(3)
    np.testing.assert_array_equal(again.means.numpy(), means)  # a fixed seed


def test_monte_carlo_kl_is_unbiased_for_a_one_component_mixture():
    """KL(q || p) for q = N(a, diag b^2), p = N(m, diag s^2) (a MoG with K=1)."""
    with _no_user_warnings():  # learned priors: the MC KL is expected, not warned about
        model = small_vae(latent_dim=2, prior=MixtureOfGaussians(1))
    assert not model.analytic_kl
    m, s = np.array([0.5, -1.0]), np.array([0.7, 1.6])
    model.latent_prior.means.assign(m[None].astype(np.float32))
    model.latent_prior.raw_scales.assign(
        np.log(np.expm1(s - priors.MIN_PRIOR_SCALE))[None].astype(np.float32))
    a, b = np.array([1.0, 0.2]), np.array([0.4, 1.1])
    closed_form = np.sum(np.log(s / b) + (b**2 + (a - m) ** 2) / (2 * s**2) - 0.5)
    q = tfd.MultivariateNormalDiag(loc=a[None].astype(np.float32),
                                   scale_diag=b[None].astype(np.float32))  # batch [1]
    z = q.sample(200_000, seed=stateless_seed(5))  # [N, 1, 2]
    estimates = model.kl_divergence(q, z).numpy().ravel().astype(np.float64)
    standard_error = estimates.std() / np.sqrt(len(estimates))
    assert abs(estimates.mean() - closed_form) < 4 * standard_error, (estimates.mean(),
                                                                    closed_form)


@pytest.mark.parametrize("make_prior", [lambda: MixtureOfGaussians(1), lambda: VampPrior(1)],
                         ids=["mog", "vamp"])
def test_monte_carlo_kl_gradient_matches_the_closed_form_gradient(make_prior):
    """With one component p(z) is a Gaussian, so KL(q || p) has a closed form; the gradient of
    the VAE's Monte-Carlo KL (averaged over many z) must match its gradient for every trained
    weight: the encoder's, and the prior's own (means and scales, or the pseudo-input that
    goes through the same encoder)."""
    with _no_user_warnings():
        model = small_vae(prior=make_prior())
    x = (np.random.default_rng(0).random((4, 4, 4, 1)) < 0.3).astype(np.float32)
    variables = [*model.encoder.trainable_variables, *model.latent_prior.trainable_variables]
    with tf.GradientTape() as tape:
        q = model.posterior(x)
        z = q.sample(50_000, seed=stateless_seed(3))  # [N, B, D]
        monte_carlo = tf.reduce_mean(model.kl_divergence(q, z))
    with tf.GradientTape() as closed_tape:
        q = model.posterior(x)
        gaussian = model.prior.components_distribution  # batch [1], event [D]
        closed_form = tf.reduce_mean(tfd.kl_divergence(q, gaussian))
    grads = tape.gradient(monte_carlo, variables)
    closed_grads = closed_tape.gradient(closed_form, variables)
    assert abs(float(monte_carlo) - float(closed_form)) < 0.02 * float(closed_form)
    for variable, grad, want in zip(variables, grads, closed_grads):
        if want is None:  # a one-component mixture's weight logit: p(z) does not depend on it
            assert grad is None or np.abs(grad.numpy()).max() < 1e-6, variable.path
            continue
        grad, want = grad.numpy().ravel(), want.numpy().ravel()
        error = np.linalg.norm(grad - want) / np.linalg.norm(want)
        assert error < 0.03, (variable.path, error)


def test_a_fixed_prior_without_closed_form_still_warns():
    prior = tfd.Independent(tfd.Logistic(loc=tf.zeros(3), scale=tf.ones(3)), 1)
    with pytest.warns(UserWarning, match="Monte-Carlo"):
        small_vae(prior=prior)


# ------------------------------------------------- the matrix-product mixture density
def _diagonal_mixture_parameters(num_components=7, latent_dim=5, seed=3):
    """Unequal weights; locations far apart and scales from 0.02 to 3, where the expanded
    square (z - mu)^2 / sigma^2 loses the most to float32 rounding."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=num_components)
    loc = rng.normal(2.0, 3.0, size=(num_components, latent_dim))
    scale = np.exp(rng.uniform(np.log(0.02), np.log(3.0), size=(num_components, latent_dim)))
    return logits, loc, scale


def _mixtures(logits, loc, scale):
    logits, loc, scale = (tf.constant(v, tf.float32) for v in (logits, loc, scale))
    args = (tfd.Categorical(logits=logits), tfd.MultivariateNormalDiag(loc, scale))
    return priors.DiagonalGaussianMixture(*args), tfd.MixtureSameFamily(*args)


def test_diagonal_gaussian_mixture_log_prob_matches_numpy_and_tfp():
    logits, loc, scale = _diagonal_mixture_parameters()
    fast, reference = _mixtures(logits, loc, scale)
    rng = np.random.default_rng(4)
    # points near the components (where the density matters) and far from all of them; [S, B, D]
    near = loc[rng.integers(0, len(loc), size=(6, 10))] + scale[0] * rng.normal(size=(6, 10, 5))
    far = rng.normal(0.0, 10.0, size=(6, 10, 5))
    for z in (near, far):
        want = _numpy_mixture_log_prob(z.reshape(-1, 5), logits - logsumexp(logits), loc,
                                       scale).reshape(6, 10)
        got = fast.log_prob(z.astype(np.float32)).numpy()
        assert got.shape == (6, 10)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-3)
        np.testing.assert_allclose(got, reference.log_prob(z.astype(np.float32)).numpy(),
                                   rtol=2e-6, atol=2e-3)


def test_diagonal_gaussian_mixture_gradients_match_tfp():
    logits, loc, scale = _diagonal_mixture_parameters(num_components=4, latent_dim=3)
    z = np.random.default_rng(5).normal(2.0, 2.0, size=(20, 3)).astype(np.float32)
    variables = [tf.Variable(v.astype(np.float32)) for v in (logits, loc, scale, z)]
    gradients = []
    for mixture in (priors.DiagonalGaussianMixture, tfd.MixtureSameFamily):
        with tf.GradientTape() as tape:
            logit_v, loc_v, scale_v, z_v = variables
            dist = mixture(tfd.Categorical(logits=logit_v),
                           tfd.MultivariateNormalDiag(loc_v, scale_v))
            total = tf.reduce_sum(dist.log_prob(z_v))
        gradients.append([g.numpy() for g in tape.gradient(total, variables)])
    for fast, reference in zip(*gradients):
        np.testing.assert_allclose(fast, reference, rtol=1e-3, atol=1e-3)


def test_gaussian_mixture_takes_the_fast_form_for_diagonal_gaussians_only(caplog):
    logits = tf.zeros([2])
    diagonal = tfd.MultivariateNormalDiag(tf.zeros([2, 3]), tf.ones([2, 3]))
    with caplog.at_level("WARNING"):  # TFP warns about subclasses that break its rebuilding
        fast = priors.gaussian_mixture(logits, diagonal)
        assert fast.batch_shape == [] and fast.event_shape == [3]
        assert fast.copy().log_prob(tf.zeros([3])).numpy() == fast.log_prob(tf.zeros([3])).numpy()
    assert caplog.records == []
    assert isinstance(fast, priors.DiagonalGaussianMixture)
    other = tfd.Independent(tfd.Normal(tf.zeros([2, 3]), tf.ones([2, 3])), 1)
    mixture = priors.gaussian_mixture(logits, other)
    assert not isinstance(mixture, priors.DiagonalGaussianMixture)
    np.testing.assert_allclose(mixture.log_prob(tf.zeros([3])).numpy(),
                               fast.log_prob(tf.zeros([3])).numpy(), rtol=1e-6)
    assert isinstance(_random_mog().distribution(), priors.DiagonalGaussianMixture)


# ------------------------------------------------------------------- VampPrior
def test_vamp_log_prob_is_the_average_of_the_encoders_gaussians_at_the_pseudo_inputs():
    with _no_user_warnings():
        model = small_vae(prior=VampPrior(5))
    prior = model.latent_prior
    raw = prior.raw_pseudo_inputs.numpy().astype(np.float64)
    u = prior.pseudo_inputs().numpy()
    np.testing.assert_allclose(u, expit(raw), rtol=1e-5)  # [0, 1] data: a sigmoid
    assert u.shape == (5, 4, 4, 1) and 0 < u.min() and u.max() < 1
    params = model.encoder(u).numpy().astype(np.float64)
    mu, sigma = params[:, :3], softplus(params[:, 3:]) + 1e-4  # the posterior's own floor
    z = np.random.default_rng(2).normal(size=(40, 3))
    want = _numpy_mixture_log_prob(z, np.full(5, -np.log(5)), mu, sigma)
    got = model.prior.log_prob(z.astype(np.float32)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_vamp_gradients_reach_the_pseudo_inputs_and_the_encoder(binary_batch):
    model = small_vae(prior=VampPrior(4))
    assert any(v is model.latent_prior.raw_pseudo_inputs for v in model.trainable_variables)
    z = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        log_p = tf.reduce_sum(model.prior.log_prob(z))
    sources = [model.latent_prior.raw_pseudo_inputs, *model.encoder.trainable_variables]
    grads = tape.gradient(log_p, sources)
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)
    with tf.GradientTape() as tape:  # and through the VAE's own KL term
        _, kl = model.elbo_terms(binary_batch, seed=1)
        loss = tf.reduce_mean(kl)
    grad = tape.gradient(loss, model.latent_prior.raw_pseudo_inputs)
    assert grad is not None and np.abs(grad.numpy()).sum() > 0


def test_vamp_pseudo_inputs_of_unbounded_data_are_the_raw_values():
    model = small_vae(likelihood="normal:0.5", prior=VampPrior(3))
    np.testing.assert_array_equal(model.latent_prior.pseudo_inputs().numpy(),
                                  model.latent_prior.raw_pseudo_inputs.numpy())


def test_vamp_initialize_from_data_picks_examples(binary_batch):
    model = small_vae(prior=VampPrior(6))
    model.latent_prior.initialize_from(binary_batch, seed=1)
    u = model.latent_prior.pseudo_inputs().numpy()
    margin = priors.PSEUDO_INPUT_MARGIN
    # Six different examples (a fixed subset), pulled inside (0, 1) so the sigmoid can move.
    chosen = binary_batch[subset_indices(len(binary_batch), 6, seed=1)]
    np.testing.assert_allclose(u, np.clip(chosen, margin, 1 - margin), rtol=1e-5)
    with pytest.raises(ValueError, match="at least num_components=6"):
        model.latent_prior.initialize_from(binary_batch[:5])
    with pytest.raises(ValueError, match="shape"):
        model.latent_prior.initialize_from(np.zeros((8, 3, 3, 1), np.float32))


def test_vamp_refuses_a_conditional_vae():
    keras.utils.set_random_seed(0)
    enc, dec = tfvae.networks.build_networks("mlp", (4, 4, 1), 3, hidden_units=(8,),
                                             condition_dim=3)
    with pytest.raises(ValueError, match="conditional.*num_classes=3"):
        tfvae.VAE(enc, dec, 3, prior=VampPrior(4), num_classes=3)
    with pytest.raises(ValueError, match="unconditional"):
        config.TrainConfig(conditional=True, prior="vamp")


def test_a_vamp_prior_is_bound_to_one_vae():
    prior = VampPrior(2)
    small_vae(prior=prior)
    with pytest.raises(ValueError, match="another VAE"):
        small_vae(prior=prior)


# ------------------------------------------------------------- names and checks
def test_prior_names_and_components():
    assert tuple(priors._NAMED) == config.PRIOR_NAMES  # the CLI lists config's names
    assert isinstance(get_prior("MoG", 7), MixtureOfGaussians)
    assert get_prior("mixture", 7).num_components == 7
    assert get_prior("vamp").num_components == config.DEFAULT_PRIOR_COMPONENTS
    assert isinstance(get_prior("vamp", 3), VampPrior)
    assert isinstance(get_prior("standard_normal", 3), priors.StandardNormal)


@pytest.mark.parametrize("make", [lambda: MixtureOfGaussians(0), lambda: VampPrior(0),
                                  lambda: get_prior("vamp", 0), lambda: get_prior("mog", 2.5)])
def test_components_below_one_are_refused(make):
    with pytest.raises(ValueError, match="num_components must be an integer >= 1"):
        make()


def test_train_config_checks_the_prior():
    with pytest.raises(ValueError, match="prior_components"):
        config.TrainConfig(prior="mog", prior_components=0)
    with pytest.raises(ValueError, match="Unknown prior 'gauss'"):
        config.TrainConfig(prior="gauss")
    assert config.TrainConfig(prior=" VAMP ").prior == "vamp"


# ------------------------------------------------------- training and saving
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_fit_trains_the_prior_weights(binary_batch, prior, jit):
    with _no_user_warnings():
        model = small_vae(prior=get_prior(prior, 4))
    before = [v.numpy().copy() for v in model.latent_prior.trainable_variables]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit, steps_per_execution=2)
    history = model.fit(binary_batch, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = [v.numpy() for v in model.latent_prior.trainable_variables]
    assert len(before) == (3 if prior == "mog" else 1)
    assert all(np.abs(a - b).max() > 1e-4 for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_save_and_load_keep_the_learned_prior(tmp_path, binary_batch, prior):
    model = small_vae(prior=get_prior(prior, 3), iw_samples=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(binary_batch, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    with _no_user_warnings():
        loaded = keras.models.load_model(path)
    assert type(loaded.latent_prior) is type(model.latent_prior)
    assert loaded.latent_prior.num_components == 3
    z = np.random.default_rng(4).normal(size=(20, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.prior.log_prob(z).numpy(),
                                  model.prior.log_prob(z).numpy())
    for got, want in zip(loaded.elbo_terms(binary_batch, seed=9),
                         model.elbo_terms(binary_batch, seed=9), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    if prior == "vamp":  # the loaded prior uses the loaded encoder
        assert loaded.latent_prior._bound_model() is loaded
    # The importance-weighted bound and log p(x) run with the learned prior.
    metrics = loaded.evaluate(binary_batch, batch_size=16, verbose=0, return_dict=True)
    assert np.isfinite(metrics["iw_elbo"]) and metrics["iw_elbo"] >= metrics["elbo"] - 1.0
    log_px = loaded.log_likelihood(binary_batch[:8], num_samples=64, batch_size=8, verbose=0)
    assert np.isfinite(log_px).all() and log_px.mean() > metrics["elbo"] - 1.0


def test_cli_trains_and_saves_with_a_vamp_prior(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    out = tmp_path / "run"
    assert main(["train", "--prior", "vamp", "--prior-components", "10", "--limit", "128",
                 "--epochs", "1", "--latent-dim", "2", "--batch-size", "64",
                 "--nll-samples", "4", "--verbose", "0", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["prior"] == "vamp" and metrics["config"]["prior_components"] == 10
    model = tfvae.checkpoints.load_model(out / "model.keras")
    assert isinstance(model.latent_prior, VampPrior)
    assert model.latent_prior.raw_pseudo_inputs.shape == (10, 28, 28, 1)


def test_cli_refuses_zero_components(capsys):
    assert main(["train", "--prior", "mog", "--prior-components", "0", "--out", "x"]) == 2
    assert "prior-components" in capsys.readouterr().err


def test_log_likelihood_chunks_count_a_mixture_priors_log_densities():
    """A mixture's [K] log-densities per sample bound the chunk when they outgrow the decoder's
    outputs, so that memory stays at most importance.MAX_DECODED_VALUES floats per tensor."""
    from tfvae import importance

    small = small_vae(prior=get_prior("mog", 2))
    data_size = int(np.prod(small.data_shape))
    assert importance.default_samples_per_chunk(small, 10) == importance.MAX_DECODED_VALUES // (
        10 * data_size)
    components = 4 * data_size  # K far above the data size: its [K] log-densities bound the chunk
    large = small_vae(prior=get_prior("mog", components))
    per_sample = 10 * components
    assert importance.default_samples_per_chunk(large, 10) == max(
        1, importance.MAX_DECODED_VALUES // per_sample)
    assert importance.default_samples_per_chunk(large, 10) < importance.default_samples_per_chunk(
        small, 10)
    # per point: the [K] component densities, or the point's own [D] values where D > K
    assert small.latent_prior.log_prob_values() == max(2, small.latent_dim)
    assert large.latent_prior.log_prob_values() == components
