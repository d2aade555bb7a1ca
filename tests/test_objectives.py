"""Training objectives: the importance-weighted bound (IWAE), DReG and free bits.

References are independent of the code under test: NumPy/SciPy log-densities
on the same draws, the exact log p(x) of the linear-Gaussian model of
tests/test_importance.py, Tucker et al.'s DReG written with q's parameters
stopped, and closed-form Gaussian KLs. Statistical checks use margins of a few
standard errors of paired differences.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

import tfvae
from tests.helpers import small_vae
from tests.test_importance import LinearGaussian, build_vae, mean_and_se, proposal
from tfvae import importance, objectives
from tfvae.config import OBJECTIVE_NAMES, TrainConfig
from tfvae.model import MIN_POSTERIOR_SCALE

tfd = tfp.distributions


def _binary(n=32, shape=(4, 4, 1), seed=0):
    return (np.random.default_rng(seed).random((n, *shape)) < 0.3).astype(np.float32)


# ------------------------------------------------------------------ the bound
def test_k1_bound_is_the_single_sample_elbo_of_the_same_draw():
    model = small_vae(objective="iwae", k=1, kl="mc")
    iw = objectives.importance_weighted_terms(model, _binary(), None, 1, tf.constant([3, 4]))
    np.testing.assert_allclose(iw.bound, -(iw.reconstruction + iw.kl), rtol=1e-6, atol=1e-5)


def test_bound_matches_numpy_logsumexp_and_importance_on_shared_draws():
    model, x, k, seed = small_vae(objective="iwae", k=7), _binary(6), 7, tf.constant([5, 9])
    iw = objectives.importance_weighted_terms(model, x, None, k, seed)
    z = iw.z.numpy().astype(np.float64)  # [K, B, D]
    loc, raw = np.split(model.encoder(x).numpy().astype(np.float64), 2, axis=-1)
    scale = np.logaddexp(0.0, raw) + MIN_POSTERIOR_SCALE
    logits = model.decoder(iw.z.numpy().reshape(-1, 3)).numpy().astype(np.float64)
    logits = logits.reshape(k, len(x), -1)
    xf = x.reshape(1, len(x), -1)
    log_px_z = (xf * logits - np.logaddexp(0.0, logits)).sum(-1)
    lw = log_px_z + stats.norm.logpdf(z).sum(-1) - stats.norm.logpdf(z, loc, scale).sum(-1)
    np.testing.assert_allclose(iw.bound, special.logsumexp(lw, 0) - math.log(k),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(iw.reconstruction, -log_px_z[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(iw.bound, importance.iw_bound(model, x, k, seed), rtol=1e-6)


def test_bound_is_above_the_elbo_and_rises_with_k_on_a_small_model():
    model, x = small_vae(objective="iwae", k=1), _binary(200)
    bounds = {k: np.mean([objectives.importance_weighted_terms(
        model, x, None, k, tf.constant([s, k])).bound.numpy() for s in range(5)], axis=0)
        for k in (1, 5, 50)}
    elbo = -np.add(*model.elbo_terms(x, seed=1))  # closed-form KL
    mean, se = mean_and_se(bounds[1] - elbo)
    assert abs(mean) < 4 * se + 1e-3, (mean, se)  # L_1 estimates the ELBO
    for small, large in ((1, 5), (5, 50)):
        mean, se = mean_and_se(bounds[large] - bounds[small])
        assert mean > 4 * se, (small, large, mean, se)


def test_bound_approaches_the_exact_log_likelihood_of_the_linear_gaussian_model():
    model = LinearGaussian(seed=0)
    x = model.sample_x(300)
    log_px = model.log_px(x)
    vae = build_vae(model, loc_factor=0.5, scale_factor=1.8)
    gaps = {}
    for k in (1, 30, 2000):
        bound = objectives.importance_weighted_terms(vae, x, None, k, tf.constant([k, 0])).bound
        gaps[k] = mean_and_se(log_px - bound.numpy())
    loc, var = proposal(model, x, 0.5, 1.8)
    elbo_gap = np.mean(log_px - model.elbo(x, loc, var))
    assert abs(gaps[1][0] - elbo_gap) < 4 * gaps[1][1]
    assert gaps[1][0] > gaps[30][0] > gaps[2000][0] > -3 * gaps[2000][1]
    assert gaps[2000][0] < 0.03 * elbo_gap, (gaps, elbo_gap)


# ------------------------------------------------------------------------ DReG
def _gradient_function(vae, x, k):
    """Per seed: (DReG gradients, IWAE gradients, Tucker's reference encoder
    gradients, a biased variant's encoder gradients), each a flat vector, plus
    the number of encoder values."""
    variables = vae.trainable_variables
    encoder_count = len(vae.encoder.trainable_variables)
    batch, dim = x.shape[0], vae.latent_dim

    @tf.function
    def run(seed):
        with tf.GradientTape(persistent=True) as tape:
            iw = objectives.importance_weighted_terms(vae, x, None, k, seed, training=True,
                                                      dreg=True)
            loss = -tf.reduce_mean(iw.bound)
            # Tucker et al. 2018 written out: q's parameters stopped in log q.
            q = vae.posterior(x, training=True)
            stopped = tfd.MultivariateNormalDiag(tf.stop_gradient(q.loc),
                                                 tf.stop_gradient(q.scale.diag))
            eps = tf.random.stateless_normal([k, batch, dim], seed=seed, alg="philox")
            z = q.loc + q.scale.diag * eps
            lw = vae.decode(z).log_prob(x) + vae.prior.log_prob(z) - stopped.log_prob(z)
            w = tf.stop_gradient(tf.nn.softmax(lw, axis=0))
            reference = -tf.reduce_mean(tf.reduce_sum(w**2 * lw, axis=0))
            # The same with weights w~ (the "sticking the landing" estimator): biased for k > 1.
            biased = -tf.reduce_mean(tf.reduce_sum(w * lw, axis=0))
        dreg = objectives.dreg_gradients(tape, loss, iw.encoder_loss, iw.z, variables)
        iwae = tape.gradient(loss, variables)
        ref = tape.gradient(reference, variables[:encoder_count])
        wrong = tape.gradient(biased, variables[:encoder_count])

        def flat(gradients):
            return tf.concat([tf.reshape(g, [-1]) for g in gradients], 0)

        return flat(dreg), flat(iwae), flat(ref), flat(wrong)

    sizes = [int(np.prod(v.shape)) for v in variables]
    return run, sum(sizes[:encoder_count])


@pytest.fixture(scope="module")
def dreg_draws():
    """300 paired gradient draws on the linear-Gaussian model with a proposal
    near (not at) the exact posterior, k=10."""
    model = LinearGaussian(seed=1)
    x = tf.constant(model.sample_x(8))
    vae = build_vae(model, loc_factor=0.8, scale_factor=1.3)
    run, n_encoder = _gradient_function(vae, x, k=10)
    draws = [run(tf.constant([s, 17])) for s in range(300)]
    return [np.array([d[i].numpy() for d in draws], np.float64) for i in range(4)] + [n_encoder]


def test_dreg_equals_the_papers_formula_and_iwae_for_the_decoder(dreg_draws):
    dreg, iwae, ref, _, n = dreg_draws
    np.testing.assert_allclose(dreg[:, :n], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dreg[:, n:], iwae[:, n:], rtol=1e-6, atol=1e-7)
    assert np.abs(dreg[:, :n] - iwae[:, :n]).max() > 1e-3  # the encoder's do differ


def _hotelling_p_value(diff: np.ndarray) -> float:
    """p-value of "the mean of the rows of ``diff`` ``[n, p]`` is 0" (Hotelling's T^2),
    which accounts for the correlations between the gradient's components."""
    n, p = diff.shape
    mean = diff.mean(0)
    t2 = n * mean @ np.linalg.solve(np.cov(diff.T), mean)
    return float(stats.f.sf((n - p) / (p * (n - 1)) * t2, p, n - p))


def test_dreg_encoder_gradient_has_iwaes_expectation_and_less_variance(dreg_draws):
    dreg, iwae, _, biased, n = dreg_draws
    # Paired (the same draws): no detectable difference of the means ...
    assert _hotelling_p_value(dreg[:, :n] - iwae[:, :n]) > 1e-3
    # ... where the test does detect a biased estimator's.
    assert _hotelling_p_value(biased - iwae[:, :n]) < 1e-6
    ratio = dreg[:, :n].var(0).sum() / iwae[:, :n].var(0).sum()
    assert ratio < 0.5, ratio


# ------------------------------------------------------------------ free bits
def test_per_dimension_kl_matches_the_closed_form():
    loc = np.array([[0.0, 1.0, -2.0], [0.5, 0.0, 0.3]], np.float32)
    scale = np.array([[1.0, 0.5, 2.0], [0.3, 1.0, 1.5]], np.float32)
    q = tfd.MultivariateNormalDiag(loc, scale)
    prior = tfd.MultivariateNormalDiag(tf.zeros(3), tf.ones(3))
    expected = 0.5 * (scale**2 + loc**2 - 1.0 - np.log(scale**2))
    np.testing.assert_allclose(objectives.per_dimension_kl(q, prior), expected, rtol=1e-5)
    for free_bits, floor in ((0.0, expected.mean(0)), (0.4, np.maximum(expected.mean(0), 0.4))):
        np.testing.assert_allclose(objectives.free_bits_kl(q, prior, free_bits), floor.sum(),
                                   rtol=1e-5)


def test_free_bits_gradient_vanishes_below_the_floor():
    loc = tf.Variable([[0.1, 0.0, 3.0], [-0.1, 0.2, 2.0]])
    scale = tf.Variable(tf.ones([2, 3]))
    prior = tfd.MultivariateNormalDiag(tf.zeros(3), tf.ones(3))
    with tf.GradientTape() as tape:
        kl = objectives.free_bits_kl(tfd.MultivariateNormalDiag(loc, scale), prior, 1.0)
    d_loc, d_scale = tape.gradient(kl, [loc, scale])
    assert np.all(d_loc.numpy()[:, :2] == 0) and np.all(d_scale.numpy()[:, :2] == 0)
    np.testing.assert_allclose(d_loc.numpy()[:, 2], [1.5, 1.0])  # d/dmu of mean mu^2/2
    assert float(kl) == pytest.approx(2 * 1.0 + (9 + 4) / 4)


def test_free_bits_changes_the_loss_only():
    x = _binary(64)
    results = {}
    for free_bits in (0.0, 1e-9, 50.0):
        model = small_vae(free_bits=free_bits, seed=0)
        model.compile()
        results[free_bits] = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    plain, tiny, large = results[0.0], results[1e-9], results[50.0]
    for key in ("elbo", "kl", "reconstruction"):  # the true ones, unchanged by lambda
        assert tiny[key] == pytest.approx(plain[key], rel=1e-6)
        assert large[key] == pytest.approx(plain[key], rel=1e-6)
    assert tiny["loss"] == pytest.approx(-plain["elbo"], rel=1e-6)  # lambda ~ 0: the ELBO
    assert plain["kl"] < 3 * 50.0  # every KL_d below the floor: the KL part is D * lambda
    assert large["loss"] - large["reconstruction"] == pytest.approx(3 * 50.0, rel=1e-6)


# ------------------------------------------------------ options, saving, errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(objective="iwae", k=0), "k must be"),
    (dict(objective="elbo", k=5), "k=5 importance samples need objective"),
    (dict(objective="vimco"), "Unknown objective 'vimco'"),
    (dict(free_bits=-0.5), "free_bits must be a finite number >= 0"),
    (dict(objective="iwae", k=2, beta=0.5), "beta=0.5 changes the ELBO's KL term"),
    (dict(objective="dreg", k=2, kl_warmup_steps=10), "kl_warmup_steps=10"),
    (dict(objective="iwae", k=2, free_bits=0.5), "free_bits=0.5"),
])
def test_bad_options_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_vae(**kwargs)


def test_free_bits_refuses_what_has_no_per_dimension_kl():
    mixture = tfd.MixtureSameFamily(
        tfd.Categorical(logits=tf.zeros(2)),
        tfd.MultivariateNormalDiag(loc=tf.constant([[-1.0] * 3, [1.0] * 3]),
                                   scale_diag=tf.ones([2, 3])))
    with pytest.raises(ValueError, match="factorised Gaussian prior.*MixtureSameFamily"):
        small_vae(free_bits=0.5, prior=mixture, kl="mc")
    flow = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(3), tf.ones(3)),
                                       tfp.bijectors.Exp())
    with pytest.raises(ValueError, match="diagonal Gaussian q.*TransformedDistribution"):
        objectives.per_dimension_kl(flow, tfd.MultivariateNormalDiag(tf.zeros(3), tf.ones(3)))


def test_config_checks_and_names():
    assert OBJECTIVE_NAMES == objectives.OBJECTIVES
    for kwargs, match in [(dict(objective="x"), "Unknown objective"),
                          (dict(k=3), "k=3 importance samples"),
                          (dict(k=0), "k must be an integer > 0"),
                          (dict(free_bits=-1.0), "free_bits must be a number >= 0"),
                          (dict(objective="iwae", k=2, beta=0.5), "beta changes")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(objective="dreg", k=3), dict(free_bits=0.25)])
def test_save_and_load_keep_the_objective(tmp_path, kwargs):
    model = small_vae(**kwargs)
    model.compile()
    model.fit(_binary(16), batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert (loaded.objective, loaded.k, loaded.free_bits) == (
        kwargs.get("objective", "elbo"), kwargs.get("k", 1), kwargs.get("free_bits", 0.0))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, jit", [
    (dict(free_bits=0.5), False), (dict(objective="iwae", k=4), False),
    (dict(objective="dreg", k=4), False), (dict(objective="dreg", k=4), True)])
def test_fit_works_with_each_objective(kwargs, jit):
    model = small_vae(**kwargs, seed=0)
    model.compile(jit_compile=jit, steps_per_execution=2)
    before = [v.numpy() for v in model.trainable_variables]
    history = model.fit(_binary(64), batch_size=16, epochs=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values())
    assert ("iwae" in history) == ("objective" in kwargs)
    if "iwae" in history:  # loss is -L_k
        assert history["loss"][-1] == pytest.approx(-history["iwae"][-1])
    moved = [not np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables)]
    assert all(moved)  # the encoder's and the decoder's variables


def test_train_with_iwae_through_the_config(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFVAE_DATA_DIR", str(data_dir))
    config = TrainConfig(limit=64, epochs=1, latent_dim=2, batch_size=32, objective="dreg", k=3)
    metrics = tfvae.train(config, tmp_path / "run", verbose=0)
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert (model.objective, model.k) == ("dreg", 3)
    assert metrics["test"]["iwae"] >= metrics["test"]["elbo"] - 1.0
