"""The VAE's loss, KL, gradients, training, sampling and saving, against
independent references (hand-written NumPy/SciPy, Monte Carlo)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from helpers import small_vae
from scipy.special import log_expit, softplus
from scipy.stats import norm

import tfvae
from tfvae.seeds import stateless_seed

tfd = tfp.distributions


def _numpy_neg_elbo(model, x, z, analytic=True):
    """-ELBO terms by hand from the networks' raw outputs and a given z."""
    params = model.encoder(x).numpy().astype(np.float64)
    d = model.latent_dim
    mu, sigma = params[:, :d], softplus(params[:, d:]) + 1e-4
    logits = model.decoder(z).numpy().astype(np.float64)
    x64 = x.astype(np.float64)
    log_px = (x64 * log_expit(logits) + (1 - x64) * log_expit(-logits)).reshape(len(x), -1).sum(1)
    if analytic:
        kl = 0.5 * (sigma**2 + mu**2 - 1 - 2 * np.log(sigma)).sum(1)
    else:
        kl = (norm.logpdf(z, mu, sigma) - norm.logpdf(z)).sum(1)
    return -log_px, kl


@pytest.mark.parametrize("kl_mode", ["analytic", "mc"])
def test_elbo_terms_match_hand_computation(binary_batch, kl_mode):
    model = small_vae(kl=kl_mode)
    rec, kl = model.elbo_terms(binary_batch, seed=7)
    z = model.posterior(binary_batch).sample(seed=stateless_seed(7)).numpy()
    want_rec, want_kl = _numpy_neg_elbo(model, binary_batch, z, analytic=kl_mode == "analytic")
    np.testing.assert_allclose(rec.numpy(), want_rec, rtol=1e-4)
    np.testing.assert_allclose(kl.numpy(), want_kl, rtol=1e-4, atol=1e-5)


def test_evaluate_loss_is_the_negative_elbo_with_beta(binary_batch):
    model = small_vae(beta=0.5)
    model.compile()
    # The model draws z from its seed stream: read the seed it is about to use.
    seed = tf.cast(model.seed_generator.state.value, tf.int32)
    z = model.posterior(binary_batch).sample(seed=seed).numpy()
    want_rec, want_kl = _numpy_neg_elbo(model, binary_batch, z)
    logs = model.evaluate(binary_batch, batch_size=len(binary_batch), verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(np.mean(want_rec + 0.5 * want_kl), rel=1e-4)
    assert logs["elbo"] == pytest.approx(-np.mean(want_rec + want_kl), rel=1e-4)
    assert logs["kl"] == pytest.approx(np.mean(want_kl), rel=1e-4)


def test_analytic_kl_matches_monte_carlo():
    model = small_vae(latent_dim=4)
    q = tfd.MultivariateNormalDiag(loc=[[0.5, -1.0, 0.2, 2.0]], scale_diag=[[0.3, 1.5, 1.0, 0.7]])
    analytic = float(model.kl_divergence(q, None)[0])
    z = q.sample(200_000, seed=stateless_seed(1))
    log_ratio = (q.log_prob(z) - model.prior.log_prob(z)).numpy()[:, 0]
    standard_error = log_ratio.std() / np.sqrt(len(log_ratio))
    assert abs(log_ratio.mean() - analytic) < 4 * standard_error


def test_reconstruction_term_alone_trains_the_encoder(binary_batch):
    model = small_vae()
    with tf.GradientTape() as tape:
        rec, _ = model.elbo_terms(binary_batch, seed=3)
        loss = tf.reduce_mean(rec)
    grads = tape.gradient(loss, model.encoder.trainable_variables)
    assert all(g is not None for g in grads)
    # Both halves of the encoder's output layer (mean and scale) get gradient.
    kernel_grad = grads[-2].numpy()
    d = model.latent_dim
    assert np.abs(kernel_grad[:, :d]).sum() > 0 and np.abs(kernel_grad[:, d:]).sum() > 0


def _digits():
    from sklearn.datasets import load_digits

    x = load_digits().images.astype(np.float32)[..., None] / 16.0  # [1797, 8, 8, 1] in [0, 1]
    return x[:1500], x[1500:]


def test_training_on_digits_lowers_validation_loss():
    train, val = _digits()
    keras.utils.set_random_seed(0)
    enc, dec = tfvae.networks.build_networks("mlp", (8, 8, 1), 4, hidden_units=(64,))
    model = tfvae.VAE(enc, dec, 4, likelihood="continuous_bernoulli")
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = model.evaluate(val, verbose=0, return_dict=True)["loss"]
    history = model.fit(train, epochs=15, batch_size=50, validation_data=(val,), verbose=0)
    after = history.history["val_loss"][-1]
    # Continuous-Bernoulli -log p can go below zero; compare improvement in nats.
    assert before - after > 40, (before, after)
    assert np.isfinite(history.history["loss"]).all()


def test_save_and_load_round_trip(tmp_path, binary_batch):
    model = small_vae(likelihood=tfvae.Normal(scale="learned", init_scale=0.3), beta=0.7)
    model.compile()
    model.fit(binary_batch, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, tfvae.VAE)
    np.testing.assert_array_equal(loaded.encoder(binary_batch).numpy(),
                                  model.encoder(binary_batch).numpy())
    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.decoder(z).numpy(), model.decoder(z).numpy())
    np.testing.assert_allclose(loaded.likelihood.stddev().numpy(),
                               model.likelihood.stddev().numpy())
    assert float(loaded.beta.numpy()) == pytest.approx(0.7)
    assert loaded.optimizer is not None
    loaded.fit(binary_batch, epochs=1, batch_size=8, verbose=0)  # training resumes


def test_custom_prior_falls_back_to_monte_carlo_kl_and_refuses_to_save(tmp_path):
    prior = tfd.Independent(tfd.Logistic(loc=tf.zeros(3), scale=tf.ones(3)), 1)
    with pytest.warns(UserWarning, match="Monte-Carlo"):
        model = small_vae(prior=prior)
    assert not model.analytic_kl
    model.compile()
    with pytest.raises(NotImplementedError, match="plain TFP distribution"):
        model.get_config()


def test_kl_warmup_schedule(binary_batch):
    model = small_vae(beta=2.0)
    model.compile(optimizer="sgd")
    warmup = tfvae.KLWarmup(steps=8)
    model.fit(binary_batch, epochs=1, batch_size=8, verbose=0, callbacks=[warmup])  # 4 steps
    # The weight of the next step (step index 4) is 2 * 4/8; beta stays the target.
    assert float(model.kl_weight()) == pytest.approx(2.0 * 4 / 8)
    assert float(model.beta.numpy()) == 2.0 and model.kl_warmup_steps == 8
    model.fit(binary_batch, epochs=3, batch_size=8, verbose=0, callbacks=[warmup])
    assert float(model.kl_weight()) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive number of batches"):
        tfvae.KLWarmup(steps=0)


def test_sample_and_reconstruct(binary_batch):
    model = small_vae()
    draws = model.sample(6, seed=3).numpy()
    assert draws.shape == (6, 4, 4, 1) and set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_array_equal(draws, model.sample(6, seed=3).numpy())
    means = model.sample(6, seed=3, mean=True).numpy()
    assert ((means > 0) & (means < 1)).all()
    recon = model.reconstruct(binary_batch).numpy()
    assert recon.shape == binary_batch.shape
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        model.sample(0)


def test_xla_compiled_step_agrees_with_the_graph_step(binary_batch):
    # XLA draws other random numbers from the same stateless seed, so compare
    # the two -ELBO estimators' means over many draws, within standard errors.
    model = small_vae()
    x = np.repeat(binary_batch, 256, axis=0)  # 8192 examples

    def neg_elbo(seed):
        rec, kl = model.elbo_terms(x, seed=seed)
        return rec + kl

    plain = tf.function(neg_elbo)(stateless_seed(1)).numpy()
    xla = tf.function(neg_elbo, jit_compile=True)(stateless_seed(2)).numpy()
    standard_error = np.sqrt(plain.var() / len(plain) + xla.var() / len(xla))
    assert abs(plain.mean() - xla.mean()) < 4 * standard_error

    model.compile(jit_compile=True)
    history = model.fit(binary_batch, epochs=3, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_conv_networks_build_for_mnist_and_frey_shapes():
    for shape in ((28, 28, 1), (28, 20, 1)):
        enc, dec = tfvae.networks.build_networks("conv", shape, 2)
        assert tfvae.VAE(enc, dec, 2).data_shape == shape
    with pytest.raises(ValueError, match="divisible by 4"):
        tfvae.networks.build_networks("conv", (30, 28, 1), 2)
    with pytest.raises(ValueError, match="Expected one of mlp, conv"):
        tfvae.networks.build_networks("resnet", (28, 28, 1), 2)
