"""The conditional VAE (``VAE(..., num_classes=C)``): q(z|x,y), p(x|z,y), its
ELBO against NumPy, training, sampling by class, saving, label checks, CLI."""

from __future__ import annotations

import hashlib
import json

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from helpers import small_vae
from scipy.special import log_expit, softplus

import tfvae
from tfvae import checkpoints, datasets
from tfvae.cli import main
from tfvae.seeds import stateless_seed

CLASSES = 3
SHAPE = (4, 4, 1)


def small_cvae(latent_dim=2, network="mlp", shape=SHAPE, **kwargs) -> tfvae.VAE:
    """A tiny conditional VAE on ``shape`` images with ``CLASSES`` classes."""
    keras.utils.set_random_seed(0)
    hidden = {"hidden_units": (16,)} if network == "mlp" else {}
    encoder, decoder = tfvae.networks.build_networks(network, shape, latent_dim,
                                                     condition_dim=CLASSES, **hidden)
    return tfvae.VAE(encoder, decoder, latent_dim, num_classes=CLASSES, **kwargs)


def labelled_batch(n=48, seed=0):
    """Binary 4x4 images whose class decides which quarter of the pixels is on."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % CLASSES
    p = np.full((n, 16), 0.1)
    for c in range(CLASSES):
        p[y == c, 4 * c:4 * c + 4] = 0.9
    return (rng.random((n, 16)) < p).astype(np.float32).reshape(n, *SHAPE), y


def _numpy_neg_elbo(model, x, y, z):
    """-log p(x|z,y) (Bernoulli) and KL(q(z|x,y) || N(0, I)) by hand, from the
    networks' raw outputs, the one-hot labels and a given z."""
    one_hot = np.eye(CLASSES, dtype=np.float32)[y]
    params = model.encoder([x, one_hot]).numpy().astype(np.float64)
    d = model.latent_dim
    mu, sigma = params[:, :d], softplus(params[:, d:]) + 1e-4  # the model's floor on sigma
    logits = model.decoder([z, one_hot]).numpy().astype(np.float64)
    x64 = x.astype(np.float64)
    log_px = (x64 * log_expit(logits) + (1 - x64) * log_expit(-logits)).reshape(len(x), -1).sum(1)
    kl = 0.5 * (sigma**2 + mu**2 - 1 - 2 * np.log(sigma)).sum(1)
    return -log_px, kl


def test_conditional_elbo_terms_and_evaluate_match_hand_computation():
    x, y = labelled_batch(12)
    model = small_cvae()
    rec, kl = model.elbo_terms(x, y, seed=7)
    z = model.posterior(x, y).sample(seed=stateless_seed(7)).numpy()
    want_rec, want_kl = _numpy_neg_elbo(model, x, y, z)
    np.testing.assert_allclose(rec.numpy(), want_rec, rtol=1e-4)
    np.testing.assert_allclose(kl.numpy(), want_kl, rtol=1e-4, atol=1e-5)

    model.compile()  # the compiled test step, with its labels, computes the same
    seed = tf.cast(model.seed_generator.state.value, tf.int32)
    z = model.posterior(x, y).sample(seed=seed).numpy()
    want_rec, want_kl = _numpy_neg_elbo(model, x, y, z)
    logs = model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    assert logs["elbo"] == pytest.approx(-np.mean(want_rec + want_kl), rel=1e-4)
    assert logs["kl"] == pytest.approx(np.mean(want_kl), rel=1e-4)


def test_conditional_fit_lowers_the_loss_with_the_vae_metrics():
    x, y = labelled_batch()
    model = small_cvae()
    model.compile(optimizer=tfvae.FusedAdam(0.02))
    assert [m.name for m in model.metrics] == [m.name for m in small_vae().metrics]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
    before = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
    history = model.fit(x, y, epochs=6, batch_size=8, verbose=0,
                        validation_data=(x[:12], y[:12])).history
    assert set(history) == {"loss", "reconstruction", "kl", "elbo", "val_loss",
                            "val_reconstruction", "val_kl", "val_elbo"}
    after = model.evaluate(ds, verbose=0, return_dict=True)
    assert after["loss"] < before - 3.0  # about 11.6 -> 4.6 nats when written
    assert after["elbo"] == pytest.approx(-(after["reconstruction"] + after["kl"]), rel=1e-5)


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_the_decoder_depends_on_the_label(network):
    shape = SHAPE if network == "mlp" else (8, 8, 1)
    model = small_cvae(network=network, shape=shape)
    z = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    means = [model.decode(z, np.full(5, c)).mean().numpy() for c in range(CLASSES)]
    assert all(np.abs(means[a] - means[b]).max() > 1e-4 for a, b in [(0, 1), (0, 2), (1, 2)])
    # The same z under per-example labels gives the rows of the per-class decodings.
    mixed = model.decode(z, [0, 1, 2, 1, 0]).mean().numpy()
    np.testing.assert_allclose(mixed[1], means[1][1], rtol=1e-6)
    np.testing.assert_allclose(mixed[2], means[2][2], rtol=1e-6)
    # z with a leading sample axis [K, B, D]: one label per example of B.
    stacked = model.decode(np.stack([z, z]), [0, 1, 2, 1, 0]).mean().numpy()
    np.testing.assert_allclose(stacked[1], mixed, rtol=1e-6)


def test_sample_by_label_and_reconstruct():
    model = small_cvae()
    assert model.sample(4, labels=[0, 1, 2, 0], seed=1).shape == (4, *SHAPE)
    one_class = model.sample(6, labels=2, seed=1, mean=True).numpy()
    same_z = model.sample(6, labels=[2] * 6, seed=1, mean=True).numpy()
    other = model.sample(6, labels=[0] * 6, seed=1, mean=True).numpy()
    np.testing.assert_array_equal(one_class, same_z)  # an int label means all n of that class
    assert np.abs(one_class - other).max() > 1e-4
    x, y = labelled_batch(6)
    assert model.reconstruct(x, y).shape == (6, *SHAPE)
    assert model.encode(x, y).mean().shape == (6, 2)
    assert model.predict(x, y=y, verbose=0).shape == (6, *SHAPE)


def test_save_and_load_round_trip(tmp_path):
    x, y = labelled_batch(6)
    model = small_cvae(network="conv", shape=(8, 8, 1))
    x8 = np.tile(x, (1, 2, 2, 1))
    checkpoints.save_model(model, tmp_path / "cvae.keras")
    loaded = checkpoints.load_model(tmp_path / "cvae.keras")
    assert loaded.num_classes == CLASSES
    np.testing.assert_array_equal(loaded.encode(x8, y).mean(), model.encode(x8, y).mean())
    np.testing.assert_array_equal(loaded.encode(x8, y).stddev(), model.encode(x8, y).stddev())
    z = np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.decode(z, y).mean(), model.decode(z, y).mean())


BAD_LABELS = {
    "out of range": ([0, 1, 3, 0], "labels in [0, 3]; expected one integer class label in [0, 2]"),
    "negative": ([0, -1, 2, 0], "labels in [-1, 2]"),
    "wrong count": ([0, 1, 2], "3 labels for 4 examples"),
    "non-integer float": ([0.0, 1.5, 2.0, 0.0], "1 non-integer value(s) (e.g. 1.5)"),
    "NaN": ([0.0, np.nan, 2.0, 0.0], "1 NaN or inf value(s)"),
    "strings": (["0", "1", "2", "0"], "has dtype <U1; expected one integer class label"),
    "one-hot": (np.eye(3)[[0, 1, 2, 0]], "not one-hot: use argmax"),
    "missing": (None, "y is missing: this VAE is conditional (3 classes)"),
}


@pytest.mark.parametrize("case", BAD_LABELS)
def test_bad_labels_are_refused_with_a_clear_message(case):
    labels, message = BAD_LABELS[case]
    x = labelled_batch(4)[0]
    model = small_cvae()
    model.compile()
    for call in (lambda: model.encode(x, labels), lambda: model.fit(x, labels, verbose=0),
                 lambda: model.evaluate(x, labels, verbose=0)):
        with pytest.raises(ValueError, match="y") as error:
            call()
        assert message in str(error.value)


def test_float_labels_holding_whole_numbers_are_accepted():
    x, y = labelled_batch(4)
    model = small_cvae()
    np.testing.assert_array_equal(model.encode(x, y.astype(np.float32)).mean(),
                                  model.encode(x, y).mean())


def test_a_bad_label_in_a_later_batch_stops_fit():
    x, y = labelled_batch(32)
    y = y.copy()
    y[20] = 5  # the first batch, checked eagerly, is fine: the compiled step finds it
    model = small_cvae()
    model.compile()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match=r"y: a batch has 1 label\(s\) that are not integers "
                                         r"in \[0, 2\]"):
        model.fit(ds, epochs=1, verbose=0)


def test_labels_for_an_unconditional_vae_and_mismatched_networks_are_refused():
    x, y = labelled_batch(4)
    model = small_vae(data_shape=SHAPE)
    for call in (lambda: model.encode(x, y), lambda: model.reconstruct(x, y),
                 lambda: model.sample(4, labels=y), lambda: model.decode(np.zeros((4, 3)), y)):
        with pytest.raises(ValueError, match=r"this VAE is unconditional \(num_classes=None\); "
                                             r"expected no labels"):
            call()
    with pytest.raises(ValueError, match="labels is missing"):
        small_cvae().sample(4)
    encoder, decoder = tfvae.networks.build_networks("mlp", SHAPE, 2, hidden_units=(8,))
    with pytest.raises(ValueError, match="condition_dim=3"):
        tfvae.VAE(encoder, decoder, 2, num_classes=3)
    encoder, decoder = tfvae.networks.build_networks("mlp", SHAPE, 2, (8,), condition_dim=4)
    with pytest.raises(ValueError, match=r"shapes \(4,\) and \(4,\); expected \(3,\)"):
        tfvae.VAE(encoder, decoder, 2, num_classes=3)


def test_conditional_log_likelihood_equals_a_numpy_computation_on_the_same_draws():
    """log p(x|y) by the compiled chunk (Philox draws from q(z|x,y)) against
    NumPy float64 on the same noise; the public method's labels reach it, batch
    by batch; the test step's ``iw_elbo`` bounds log p(x|y)."""
    model = small_cvae(latent_dim=3)
    x, y = labelled_batch(6)
    run, k, seed = tfvae.importance._chunk_logsumexp(model), 30, tf.constant([5, 9])
    fast = run(tf.constant(x[:3]), k, seed, tf.constant(y[:3])).numpy()
    one_hot = np.eye(CLASSES, dtype=np.float32)[y[:3]]
    params = model.encoder([x[:3], one_hot]).numpy().astype(np.float64)
    loc, scale = params[:, :3], softplus(params[:, 3:]) + 1e-4
    noise = tf.function(jit_compile=True)(
        lambda: tf.random.stateless_normal([k, 3, 3], seed=seed, alg="philox"))
    z = loc + scale * noise().numpy().astype(np.float64)  # [K, B, D]
    logits = model.decoder([z.reshape(-1, 3).astype(np.float32),
                            np.tile(one_hot, (k, 1))]).numpy().astype(np.float64)
    flat = x[:3].reshape(1, 3, -1).astype(np.float64)
    logits = logits.reshape(k, 3, -1)
    log_px = (flat * log_expit(logits) + (1 - flat) * log_expit(-logits)).sum(-1)
    log_pz = -0.5 * (z**2 + np.log(2 * np.pi)).sum(-1)
    log_qz = (-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)).sum(-1)
    lw = log_px + log_pz - log_qz
    reference = lw.max(0) + np.log(np.exp(lw - lw.max(0)).sum(0))
    np.testing.assert_allclose(fast, reference, rtol=2e-6, atol=1e-3)

    # The public estimate: two batches of 3, each with its own labels and chunk seed.
    est = model.log_likelihood(x, num_samples=k, batch_size=3, seed=0, verbose=0, y=y)
    seed_1, chunk_0 = tfp.random.split_seed(stateless_seed(0))
    chunk_1 = tfp.random.split_seed(seed_1)[1]
    want = [run(tf.constant(x[i:i + 3]), k, chunk, tf.constant(y[i:i + 3])).numpy() - np.log(k)
            for i, chunk in ((0, chunk_0), (3, chunk_1))]
    np.testing.assert_allclose(est, np.concatenate(want), rtol=1e-6)
    with pytest.raises(ValueError, match="y is missing"):
        model.log_likelihood(x, 5, verbose=0)
    # iw_samples: the compiled test step's bound on log p(x|y), near L_2000 given the labels.
    bounded = small_cvae(latent_dim=3, iw_samples=300)
    bounded.compile()
    logs = bounded.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    tight = tfvae.importance.iw_bound(bounded, x, 2000, stateless_seed(1), y=y).numpy()
    assert logs["iw_elbo"] == pytest.approx(tight.mean(), abs=0.3)


def test_count_parameters_counts_the_condition():
    for kind, shape in (("mlp", (28, 28, 1)), ("conv", (28, 28, 1))):
        encoder, decoder = tfvae.networks.build_networks(kind, shape, 5, condition_dim=10)
        built = encoder.count_params() + decoder.count_params()
        assert tfvae.networks.count_parameters(kind, shape, 5, condition_dim=10) == built


# -------------------------------------------------------------------- CLI
@pytest.fixture
def toy_labelled(tmp_path, monkeypatch):
    """A registered toy dataset of 8x8 images with 3 classes (and one without labels)."""
    rng = np.random.default_rng(0)
    labels = np.arange(60) % CLASSES
    images = ((rng.random((60, 8, 8)) < 0.2 + 0.2 * labels[:, None, None]) * 255).astype(np.uint8)
    path = tmp_path / "data" / "toy" / "toy.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, x=images, y=labels)
    remote = datasets.RemoteFile("toy/toy.npz", "https://example.invalid/toy.npz",
                                 hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)

    def read(fetch, part, with_labels=True):
        data = np.load(fetch("toy/toy.npz"))
        keep = slice(0, 50) if part == "train" else slice(50, None)
        return data["x"][keep], (data["y"][keep] if with_labels else None)

    monkeypatch.setattr(datasets, "DATASETS", dict(datasets.DATASETS))
    monkeypatch.setattr(datasets, "FILES", dict(datasets.FILES))
    monkeypatch.setenv("TFVAE_DATA_DIR", str(tmp_path / "data"))
    sizes = {"train": 40, "valid": 10, "test": 10}
    datasets.register(datasets.Dataset("toy", "labelled 8x8 images", (remote,), read,
                                       ("train", "test"), 10, (8, 8, 1), sizes,
                                       label_names=("a", "b", "c")))
    datasets.register(datasets.Dataset("toy_unlabelled", "8x8 images", (remote,),
                                       lambda fetch, part: read(fetch, part, False),
                                       ("train", "test"), 10, (8, 8, 1), sizes))
    return tmp_path


def test_cli_conditional_train_then_sample_by_label(toy_labelled, capsys):
    out = toy_labelled / "run"
    assert main(["train", "--dataset", "toy", "--conditional", "--epochs", "2", "--latent-dim",
                 "2", "--batch-size", "8", "--verbose", "0", "--out", str(out)]) == 0
    model = checkpoints.load_model(out / "model.keras")
    assert model.num_classes == CLASSES
    samples = matplotlib.image.imread(out / "samples.png")
    assert samples.shape[:2] == (CLASSES * 9 - 1, 8 * 9 - 1)  # one row of 8 per class

    grid, rows = toy_labelled / "one.png", toy_labelled / "rows.png"
    assert main(["sample", "--model", str(out / "model.keras"), "--label", "1", "-n", "6",
                 "--ncols", "3", "--out", str(grid)]) == 0
    assert matplotlib.image.imread(grid).shape[:2] == (2 * 9 - 1, 3 * 9 - 1)
    assert main(["sample", "--model", str(out / "model.keras"), "--labels", "all", "-n", "4",
                 "--out", str(rows)]) == 0
    assert matplotlib.image.imread(rows).shape[:2] == (CLASSES * 9 - 1, 4 * 9 - 1)
    assert "one row per class: 0, 1, 2" in capsys.readouterr().out

    assert main(["sample", "--model", str(out / "model.keras"), "--label", "3",
                 "--out", str(grid)]) == 2
    assert "label 3 is out of range" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model.keras"), "--nll-samples", "5",
                 "--out", str(toy_labelled / "eval.json")]) == 0  # -log p(x|y)
    evaluation = json.loads((toy_labelled / "eval.json").read_text())
    assert evaluation["nll_samples"] == 5 and np.isfinite(evaluation["nll"])


def test_cli_conditional_errors(toy_labelled, capsys):
    plain = small_vae(data_shape=(8, 8, 1))
    checkpoints.save_model(plain, toy_labelled / "plain.keras")
    assert main(["sample", "--model", str(toy_labelled / "plain.keras"), "--label", "1",
                 "--out", str(toy_labelled / "s.png")]) == 2
    assert "--label is for conditional models" in capsys.readouterr().err
    for dataset in ("toy_unlabelled", "frey_face"):
        assert main(["train", "--dataset", dataset, "--conditional", "--verbose", "0",
                     "--out", str(toy_labelled / "never")]) == 2
        err = capsys.readouterr().err
        assert f"conditional needs class labels, and {dataset} has none" in err
        assert "mnist" in err  # the labelled datasets it could use
    assert main(["sample", "--model", "m.keras", "--labels", "x"]) == 2
    assert "expected 'all' or class labels" in capsys.readouterr().err


# ------------------------------------------------------ reference classifier
def _always(cls: int) -> keras.Model:
    """A 'classifier' of 8x8 images that answers ``cls`` whatever it sees."""
    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Dense(CLASSES, kernel_initializer="zeros",
                                bias_initializer=keras.initializers.Constant(
                                    np.eye(CLASSES)[cls]))(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, logits)


def test_conditional_sample_accuracy_counts_each_requested_class():
    model = small_cvae(network="conv", shape=(8, 8, 1))
    result = tfvae.classifier.conditional_sample_accuracy(model, _always(1), per_class=4)
    assert result["per_class"] == [0.0, 1.0, 0.0]  # only the samples asked to be 1s agree
    assert result["accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="model is unconditional"):
        tfvae.classifier.conditional_sample_accuracy(small_vae(data_shape=(8, 8, 1)), _always(0))


def test_reference_classifier_learns_a_separable_toy_problem():
    x, y = labelled_batch(96)  # 4x4: the two poolings leave 1x1
    judge = tfvae.classifier.train_classifier(x, y, CLASSES, epochs=4, batch_size=32,
                                              learning_rate=2e-2)
    predicted = np.argmax(judge.predict(x, verbose=0), axis=-1)
    assert tfvae.classifier.accuracy(judge, x, y) == pytest.approx(np.mean(predicted == y))
    assert tfvae.classifier.accuracy(judge, x, y) > 0.9
    with pytest.raises(ValueError, match="y has labels in"):
        tfvae.classifier.accuracy(judge, x, y + 1)
