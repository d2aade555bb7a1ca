"""tfvae.pixelvae (a PixelCNN conditioned on z as p(x|z)) against independent references:
p(x|z) sums to one over every image, samples follow it, causality by autodiff; the VAE trains,
saves and estimates log p(x) with it."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import small_vae

import tfvae
from tfvae.pixelcnn import PixelCNN
from tfvae.pixelvae import PixelCNNBernoulli
from tfvae.seeds import stateless_seed

TINY = (2, 3, 1)  # 6 pixels: all 64 images can be listed


def tiny_vae(data_shape=TINY, **kwargs) -> tfvae.VAE:
    return small_vae(data_shape=data_shape, latent_dim=2, hidden=(8,),
                     likelihood=PixelCNNBernoulli(filters=8, num_layers=2, first_kernel_size=3),
                     **kwargs)


def all_images(shape=TINY) -> np.ndarray:
    pixels = int(np.prod(shape))
    return np.array(list(itertools.product([0.0, 1.0], repeat=pixels)),
                    np.float32).reshape(-1, *shape)


def test_p_x_given_z_sums_to_one_over_all_images_and_depends_on_z():
    model = tiny_vae()
    images = all_images()
    totals, log_probs = [], []
    for z in ([0.3, -1.2], [2.0, 0.5]):
        z = np.tile(np.float32(z), (len(images), 1))
        log_p = model.decode(z).log_prob(images).numpy().astype(np.float64)
        totals.append(np.logaddexp.reduce(log_p))
        log_probs.append(log_p)
    np.testing.assert_allclose(totals, 0.0, atol=1e-5)
    assert np.abs(log_probs[0] - log_probs[1]).max() > 1e-3  # the condition matters


def test_samples_follow_log_prob():
    model = tiny_vae()
    logits_layer = model.likelihood.network.to_logits  # sharper conditionals: a peaked p(x|z)
    logits_layer.kernel.assign(4 * logits_layer.kernel)
    z = np.tile(np.float32([[0.3, -1.2]]), (50_000, 1))
    p_x = model.decode(z)
    samples = p_x.sample(seed=stateless_seed(7)).numpy()
    assert set(np.unique(samples)) <= {0.0, 1.0}
    np.testing.assert_array_equal(p_x.sample(seed=stateless_seed(7)), samples)  # reproducible
    images = all_images()
    codes = samples.reshape(len(samples), -1) @ (2 ** np.arange(6)[::-1])
    found = np.bincount(codes.astype(int), minlength=64) / len(samples)
    expected = np.exp(model.decode(z[:64]).log_prob(images).numpy())
    total_variation = 0.5 * np.abs(found - expected).sum()
    assert total_variation < 0.02, total_variation  # sampling noise alone: about 0.014


def test_a_conditioned_pixelcnn_is_still_causal_in_x():
    keras.utils.set_random_seed(0)
    network = PixelCNN((5, 5, 1), filters=16, num_layers=3, first_kernel_size=3,
                       condition_channels=1)
    rng = np.random.default_rng(1)
    x = tf.constant((rng.random((1, 5, 5, 1)) < 0.5).astype(np.float32))
    condition = tf.constant(rng.normal(size=(1, 5, 5, 1)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, condition])
        logits = network(x, condition)
    on_x = tape.jacobian(logits, x).numpy().reshape(25, 25) != 0
    on_condition = tape.jacobian(logits, condition).numpy().reshape(25, 25) != 0
    raster_earlier = np.tril(np.ones((25, 25), bool), k=-1)
    assert not (on_x & ~raster_earlier).any(), "a logit depends on its own or a later pixel"
    assert on_x[raster_earlier].mean() > 0.5  # and on earlier ones
    assert on_condition.any(axis=1).all()  # every logit sees the condition
    with pytest.raises(ValueError, match=r"expected a condition map \[B, H, W, 1\]"):
        network(x)


def test_mean_is_the_greedy_draw_and_its_probabilities():
    model = tiny_vae()
    z = np.float32([[0.3, -1.2], [2.0, 0.5], [-1.0, 1.0]])
    p_x = model.decode(z)
    probabilities = p_x.mean().numpy()
    greedy = (probabilities > 0.5).astype(np.float32)
    # The probabilities along the greedy draw, recomputed in one teacher-forced pass.
    network = model.likelihood.network
    teacher_forced = tf.sigmoid(network(greedy, model.decoder(z))).numpy()
    np.testing.assert_allclose(probabilities, teacher_forced, rtol=1e-5, atol=1e-6)
    # The last pixel's value is the likelier one: flipping it lowers log p(x|z) (an earlier
    # pixel's flip changes the later conditionals, so it may not).
    flipped = greedy.reshape(3, 6).copy()
    flipped[:, -1] = 1 - flipped[:, -1]
    assert (p_x.log_prob(flipped.reshape(3, *TINY)).numpy()
            < p_x.log_prob(greedy).numpy()).all()


def test_a_vae_with_it_trains_saves_and_bounds_log_p_x(tmp_path):
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:4, 0:4]
    patterns = np.stack([rows % 2, cols % 2, (rows + cols) % 2, rows < 2]).astype(np.float32)
    x = patterns[rng.integers(0, 4, 128)][..., None]
    model = tiny_vae(data_shape=(4, 4, 1))
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    before = model.evaluate(x, batch_size=128, verbose=0, return_dict=True)
    model.fit(x, batch_size=32, epochs=4, verbose=0)
    after = model.evaluate(x, batch_size=128, verbose=0, return_dict=True)
    assert after["loss"] < 0.5 * before["loss"]

    path = tmp_path / "pixelvae.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.likelihood, PixelCNNBernoulli)
    z = np.float32(rng.normal(size=(8, 2)))
    np.testing.assert_allclose(loaded.decode(z).log_prob(x[:8]), model.decode(z).log_prob(x[:8]),
                               rtol=1e-6)
    # log p(x) by importance sampling (x broadcast over K draws of z) is above the ELBO.
    log_px = model.log_likelihood(x[:16], num_samples=64, seed=1)
    elbo = -np.mean([model.evaluate(x[:16], verbose=0, return_dict=True)["loss"]
                     for _ in range(3)])
    assert np.all(np.isfinite(log_px)) and np.mean(log_px) > elbo - 0.05


def test_refuses_images_of_more_than_one_channel():
    with pytest.raises(ValueError, match=r"one binary channel, data shape \(H, W, 1\)"):
        small_vae(data_shape=(4, 4, 3), likelihood=PixelCNNBernoulli(filters=4, num_layers=1))


def test_train_with_the_named_likelihood_writes_a_pixelvae_run(tmp_path, monkeypatch):
    from tfvae import training

    rng = np.random.default_rng(0)
    split = {name: (rng.random((n, 4, 4, 1)) < 0.3).astype(np.float32)
             for name, n in (("train", 64), ("valid", 16), ("test", 16))}
    monkeypatch.setattr(training, "load_data", lambda config: dict(split))
    config = tfvae.TrainConfig(likelihood="pixelcnn", epochs=2, batch_size=16, latent_dim=2,
                               hidden_units=(8,), free_bits=0.1)
    metrics = tfvae.train(config, tmp_path / "run", verbose=0)
    loaded = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert isinstance(loaded.likelihood, PixelCNNBernoulli)
    assert np.isfinite(metrics["test"]["elbo"]) and (tmp_path / "run" / "samples.png").exists()


def test_likelihood_names():
    from tfvae.likelihoods import get_likelihood

    assert get_likelihood("pixelcnn").num_layers == PixelCNNBernoulli().num_layers
    weaker = get_likelihood(" PixelCNN:1")
    assert isinstance(weaker, PixelCNNBernoulli) and weaker.num_layers == 1
    for bad in ("pixelcnn:0", "pixelcnn:x", "pixelcnn:"):
        with pytest.raises(ValueError, match="pixelcnn:<layers>"):
            get_likelihood(bad)
