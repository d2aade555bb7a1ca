"""The semi-supervised VAE (M2, tfvae.semi_supervised): its two objectives
against NumPy on the same noise, training with few labels, saving, the
mixed-batch pipeline and the checks on missing labels."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_expit, log_softmax, softplus

import tfvae
from tfvae import checkpoints
from tfvae.seeds import stateless_seed
from tfvae.semi_supervised import (
    SemiSupervisedVAE,
    build_m2,
    m1_features,
    mixed_batches,
    paper_alpha,
    pick_labels,
    supervised_baseline,
)

SHAPE = (4, 4, 1)


def small_m2(classes=3, latent_dim=2, alpha=2.5, **kwargs) -> SemiSupervisedVAE:
    keras.utils.set_random_seed(0)
    encoder, decoder = tfvae.networks.build_networks("mlp", SHAPE, latent_dim, (16,),
                                                     condition_dim=classes)
    classifier = tfvae.networks.mlp_classifier(SHAPE, classes, (16,))
    return SemiSupervisedVAE(encoder, decoder, classifier, latent_dim, classes, alpha=alpha,
                             **kwargs)


def toy_data(n, classes=3, seed=0):
    """Binary 4x4 images whose class decides which pixels tend to be on."""
    rng = np.random.default_rng(seed)
    y = rng.integers(classes, size=n)
    p = np.full((n, 16), 0.1)
    for c in range(classes):
        p[y == c, c * 16 // classes:(c + 1) * 16 // classes] = 0.9
    return (rng.random((n, 16)) < p).astype(np.float32).reshape(n, *SHAPE), y


def numpy_class_elbos(model, x, seed):
    """ELBO(x, y) + log p(y) for every class, ``[B, C]``, written out in NumPy
    float64 from the networks' raw outputs, at the z the model draws with ``seed``."""
    classes, batch, d = model.num_classes, len(x), model.latent_dim
    tiled = np.concatenate([x] * classes)  # class-major, as the model tiles
    labels = np.repeat(np.arange(classes), batch)
    one_hot = np.eye(classes, dtype=np.float32)[labels]
    z = model.posterior(tiled, labels).sample(seed=stateless_seed(seed)).numpy()
    params = model.encoder([tiled, one_hot]).numpy().astype(np.float64)
    mu, sigma = params[:, :d], softplus(params[:, d:]) + 1e-4
    logits = model.decoder([z, one_hot]).numpy().astype(np.float64).reshape(len(tiled), -1)
    flat = tiled.reshape(len(tiled), -1).astype(np.float64)
    log_px = (flat * log_expit(logits) + (1 - flat) * log_expit(-logits)).sum(1)
    kl = 0.5 * (sigma**2 + mu**2 - 1 - 2 * np.log(sigma)).sum(1)
    return (log_px - kl - np.log(classes)).reshape(classes, batch).T


def numpy_log_q(model, x):
    return log_softmax(model.classifier(x).numpy().astype(np.float64), axis=-1)


def test_unlabelled_objective_is_the_expected_elbo_plus_the_entropy():
    model = small_m2()
    x = toy_data(5)[0]
    terms = model.objective_terms(x, np.full(5, -1), seed=7)
    elbo, log_q = numpy_class_elbos(model, x, 7), numpy_log_q(model, x)
    q = np.exp(log_q)
    bound = (q * elbo).sum(1) - (q * log_q).sum(1)  # sum_y q ELBO(x,y) + H(q)
    np.testing.assert_allclose(terms["loss"].numpy(), -bound, rtol=1e-5)
    np.testing.assert_allclose(terms["elbo"].numpy(), bound, rtol=1e-5)
    np.testing.assert_allclose(terms["log_q"].numpy(), log_q, rtol=1e-5, atol=1e-6)


def test_labelled_objective_is_the_conditional_elbo_plus_alpha_log_q():
    model = small_m2(alpha=2.5)
    x, y = toy_data(6)
    y = np.where(np.arange(6) % 2 == 0, y, -1)  # labels of every other example are missing
    terms = model.objective_terms(x, y, seed=3)
    elbo, log_q = numpy_class_elbos(model, x, 3), numpy_log_q(model, x)
    q, rows = np.exp(log_q), np.arange(6)
    labelled = -(elbo[rows, y] + 2.5 * log_q[rows, y])
    unlabelled = -((q * (elbo - log_q)).sum(1))
    np.testing.assert_allclose(terms["loss"].numpy(), np.where(y >= 0, labelled, unlabelled),
                               rtol=1e-5)
    np.testing.assert_array_equal(terms["labelled"].numpy(), y >= 0)
    np.testing.assert_allclose(terms["labelled_elbo"].numpy()[y >= 0], elbo[rows, y][y >= 0],
                               rtol=1e-5)
    # The KL term and the labelled bound are those of the conditional VAE it extends.
    _, kl = model.class_terms(x, seed=3)
    _, vae_kl = model.elbo_terms(x, np.full(6, 1), seed=3)
    np.testing.assert_allclose(kl.numpy()[:, 1], vae_kl.numpy(), rtol=1e-5)  # analytic: no noise


def test_evaluate_reports_the_weighted_mean_loss_and_the_labelled_metrics():
    model = small_m2()
    model.compile()
    x, y = toy_data(8)
    y = np.where(np.arange(8) < 3, y, -1)
    weight = np.linspace(0.5, 2.0, 8).astype(np.float32)
    seed = tf.cast(model.seed_generator.state.value, tf.int32)  # the evaluate step's draw
    terms = model.objective_terms(x, y, seed=seed)
    ds = tf.data.Dataset.from_tensors((x, y, weight))
    logs = model.evaluate(ds, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "elbo", "labelled_elbo", "cross_entropy", "accuracy"}
    loss = terms["loss"].numpy()
    assert logs["loss"] == pytest.approx(np.sum(weight * loss) / weight.sum(), rel=1e-5)
    log_q = terms["log_q"].numpy()[np.arange(3), y[:3]]
    assert logs["cross_entropy"] == pytest.approx(-log_q.mean(), rel=1e-5)
    hits = np.argmax(model.predict(x[:3], verbose=0), axis=1) == y[:3]
    assert logs["accuracy"] == pytest.approx(hits.mean())


def test_training_with_few_labels_classifies_far_above_chance():
    x, y = toy_data(400, classes=2, seed=1)
    given = np.full(400, -1)
    for c in range(2):
        given[np.flatnonzero(y == c)[:4]] = c  # 4 labels per class
    x_test, y_test = toy_data(200, classes=2, seed=2)
    # Ten times the paper's alpha (0.1 * 400 / 8): a few epochs suffice.
    model = small_m2(classes=2, alpha=50.0)
    model.compile(optimizer=tfvae.FusedAdam(0.01))
    before = np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test)
    ds = mixed_batches(x, given, 2, batch_size=40, labelled_batch_size=8, seed=0)
    history = model.fit(ds, epochs=4, verbose=0).history
    assert history["elbo"][-1] > history["elbo"][0]
    probabilities = model.predict(x_test, verbose=0)
    assert probabilities.shape == (200, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    accuracy = np.mean(np.argmax(probabilities, axis=1) == y_test)
    assert accuracy > 0.9 and accuracy > before + 0.3  # chance is about 0.5


def test_mixed_batches_hold_labels_in_every_batch_with_unbiased_weights():
    x, y = toy_data(50)
    given = np.where(np.arange(50) < 5, y, -1)
    batches = list(mixed_batches(x, given, 3, batch_size=20, labelled_batch_size=2))
    assert [len(b[0]) for b in batches] == [22, 22, 7]  # 45 unlabelled: one pass is an epoch
    for _, by, weight in batches:
        by, weight = by.numpy(), weight.numpy()
        assert (by[:2] >= 0).all() and (by[2:] == -1).all()
        # labelled examples carry 5/50 of the batch's weight, unlabelled ones 45/50
        assert weight[:2].sum() == pytest.approx(0.1) and weight[2:].sum() == pytest.approx(0.9)
    seen = np.concatenate([b[1].numpy()[:2] for b in batches])
    assert set(seen) <= set(given[:5])


def test_save_and_load_round_trip(tmp_path):
    model = small_m2(alpha=4.0)
    x, y = toy_data(6)
    checkpoints.save_model(model, tmp_path / "m2.keras")
    loaded = checkpoints.load_model(tmp_path / "m2.keras")
    assert isinstance(loaded, SemiSupervisedVAE) and loaded.alpha == 4.0
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(loaded.objective_terms(x, y, seed=1)["loss"],
                                  model.objective_terms(x, y, seed=1)["loss"])


def test_paper_alpha_is_the_default_set_by_fit_on_arrays():
    assert paper_alpha(50_000, 100) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="num_examples must be an integer >= 100"):
        paper_alpha(50, 100)
    x, y = toy_data(12)
    model = small_m2(alpha=None)
    model.compile()
    model.fit(x, np.where(np.arange(12) < 3, y, -1), batch_size=12, verbose=0)
    assert model.alpha == pytest.approx(0.1 * 12 / 3)
    assert float(model.alpha_weight.numpy()) == pytest.approx(0.4)


BAD_FIT = {
    "label out of range": (lambda y: np.where(y == 0, 3, y),
                           "labels in [-1, 3]; expected one integer class label in [0, 2], or -1 "
                           "for a missing label, per example"),
    "below -1": (lambda y: np.where(y == 0, -2, y), "labels in [-2, 2]"),
    "all missing": (lambda y: np.full_like(y, -1), "y has no labels: all 12 are -1"),
    "wrong count": (lambda y: y[:-1], "11 labels for 12 examples"),
}


@pytest.mark.parametrize("case", BAD_FIT)
def test_bad_labels_are_refused(case):
    change, message = BAD_FIT[case]
    x, y = toy_data(12)
    y = np.where(np.arange(12) % 3 == 0, y, -1)
    model = small_m2()
    model.compile()
    with pytest.raises(ValueError) as error:
        model.fit(x, change(y), verbose=0)
    assert message in str(error.value)


def test_missing_labels_are_refused_elsewhere():
    x, y = toy_data(12)
    partly = np.where(np.arange(12) % 3 == 0, y, -1)
    encoder, decoder = tfvae.networks.build_networks("mlp", SHAPE, 2, (8,), condition_dim=3)
    plain = tfvae.VAE(encoder, decoder, 2, num_classes=3)
    plain.compile()
    with pytest.raises(ValueError, match=r"-1 marks a missing label only for "
                                         r"tfvae.semi_supervised.SemiSupervisedVAE"):
        plain.fit(x, partly, verbose=0)
    model = small_m2()
    with pytest.raises(ValueError, match=r"labels in \[-1, 2\]; expected one integer class "
                                         r"label in \[0, 2\] per"):
        model.encode(x, partly)  # inference needs true labels
    with pytest.raises(ValueError, match="expected some of each"):
        mixed_batches(x, np.full(12, -1), 3)
    model = small_m2(alpha=None)
    model.compile()
    with pytest.raises(ValueError, match="alpha=None takes the paper's rule"):
        model.fit(mixed_batches(x, partly, 3, batch_size=4), verbose=0)
    later = tf.data.Dataset.from_tensor_slices((x, np.where(np.arange(12) == 9, -2, partly)))
    model.set_alpha(1.0)
    with pytest.raises(ValueError, match=r"a batch has 1 label\(s\) that are not integers in "
                                         r"\[-1, 2\]"):
        model.fit(later.batch(4), verbose=0)  # the first batch is fine: the compiled step finds it
    none_given = tf.data.Dataset.from_tensor_slices((x, np.full(12, -1))).batch(4)
    with pytest.raises(ValueError, match="fit saw no labelled example"):
        model.fit(none_given, verbose=0)


def test_networks_are_checked():
    encoder, decoder = tfvae.networks.build_networks("mlp", SHAPE, 2, (8,), condition_dim=3)
    with pytest.raises(ValueError, match=r"classifier maps \(4, 4, 1\) to \(2,\); expected"):
        SemiSupervisedVAE(encoder, decoder, tfvae.networks.mlp_classifier(SHAPE, 2), 2, 3)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2, got None"):
        SemiSupervisedVAE(encoder, decoder, tfvae.networks.mlp_classifier(SHAPE, 3), 2, None)


def test_pick_labels_keeps_per_class_labels_chosen_by_the_seed():
    y = np.repeat(np.arange(3), [7, 5, 9])
    kept = pick_labels(y, 4, seed=1)
    assert kept.dtype == np.int32 and kept.shape == y.shape
    assert np.bincount(kept[kept >= 0], minlength=3).tolist() == [4, 4, 4]
    np.testing.assert_array_equal(kept[kept >= 0], y[kept >= 0])  # kept labels are the true ones
    assert set(kept[kept < 0]) == {-1}
    np.testing.assert_array_equal(pick_labels(y, 4, seed=1), kept)
    assert any(not np.array_equal(pick_labels(y, 4, seed=s), kept) for s in range(2, 6))
    with pytest.raises(ValueError, match="class 1 has 5 examples; expected at least per_class=6"):
        pick_labels(y, 6)
    with pytest.raises(ValueError, match="class 3 has 0 examples"):
        pick_labels(y, 2, num_classes=4)
    with pytest.raises(ValueError, match=r"labels in \[-1, 2\]"):
        pick_labels(np.array([0, 1, -1, 2]), 1, num_classes=3)


def test_build_m2_has_the_papers_networks_and_optimizer():
    model = build_m2(SHAPE, 3, latent_dim=5, hidden_units=(12,), alpha=2.0, learning_rate=0.02)
    assert isinstance(model, SemiSupervisedVAE) and model.alpha == 2.0
    assert (model.latent_dim, model.num_classes) == (5, 3)
    assert model.encoder.output_shape == (None, 10)  # mean and scale of a 5-D q(z|x,y)
    assert model.classifier.get_layer("hidden_0").units == 12
    assert isinstance(model.optimizer, tfvae.FusedAdam)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.02)


def test_supervised_baseline_learns_from_the_labelled_examples_alone():
    x, y = toy_data(30, classes=2, seed=3)
    x_test, y_test = toy_data(200, classes=2, seed=4)
    model = supervised_baseline(x, y, 2, hidden_units=(16,), learning_rate=0.01, steps=60)
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test)
    assert accuracy > 0.9  # chance is about 0.5
    with pytest.raises(ValueError, match=r"labels in \[-1, 1\]"):
        supervised_baseline(x, np.where(y == 0, -1, y), 2)  # missing labels have no place here


def test_m1_features_are_the_standardised_means_of_the_active_units():
    keras.utils.set_random_seed(0)
    encoder, decoder = tfvae.networks.build_networks("mlp", SHAPE, 4, (16,))
    m1 = tfvae.VAE(encoder, decoder, 4)
    kernel, bias = m1.encoder.get_layer("q_params").get_weights()
    kernel[:, [1, 3]] = 0.0  # means of z_1 and z_3 no longer depend on x: inactive
    m1.encoder.get_layer("q_params").set_weights([kernel, bias])
    x, _ = toy_data(300)
    x_test, _ = toy_data(50, seed=1)
    train, test = m1_features(m1, x, x_test)

    def means(images):  # NumPy: the encoder's first half, one example at a time
        return np.stack([m1.encoder(image[None]).numpy()[0, :4] for image in images])

    reference, reference_test = means(x)[:, [0, 2]], means(x_test)[:, [0, 2]]
    centre, spread = reference.mean(0), reference.std(0)
    np.testing.assert_allclose(train, (reference - centre) / spread, atol=1e-4)
    np.testing.assert_allclose(test, (reference_test - centre) / spread, atol=1e-4)
    assert train.dtype == np.float32 and train.shape == (300, 2)

    kernel[:] = 0.0
    m1.encoder.get_layer("q_params").set_weights([kernel, bias])
    with pytest.raises(ValueError, match="no active unit"):
        m1_features(m1, x)


def test_m2_on_real_valued_features_with_a_normal_likelihood():
    rng = np.random.default_rng(0)
    y = rng.integers(2, size=400)
    features = (rng.normal(size=(400, 3)) + 2.0 * y[:, None]).astype(np.float32)
    given = pick_labels(y, 5, 2, seed=0)
    model = build_m2((3,), 2, latent_dim=2, hidden_units=(16,), alpha=5.0, learning_rate=0.01,
                     likelihood=tfvae.likelihoods.Normal("learned", per_pixel=True,
                                                          init_scale=1.0))
    model.fit(mixed_batches(features, given, 2, batch_size=40), epochs=10, verbose=0)
    accuracy = np.mean(np.argmax(model.predict(features, verbose=0), axis=1) == y)
    # Two unit Gaussians 2 apart in each of 3 dimensions: the Bayes accuracy is 0.96,
    # chance 0.55.
    assert accuracy > 0.85
    assert model.likelihood.stddev().shape == (3,)
