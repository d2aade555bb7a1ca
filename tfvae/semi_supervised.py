"""The semi-supervised VAE "M2" (Kingma et al. 2014, "Semi-supervised Learning
with Deep Generative Models"): a conditional VAE q(z|x,y), p(x|z,y) trained
jointly with a classifier q(y|x) on data where most labels are missing.

The generative model is p(y) p(z) p(x|z,y), with p(y) uniform over the ``C``
classes. A missing label is ``-1`` (:data:`tfvae.validation.MISSING_LABEL`).
Per example (nats; ``B`` examples in a batch), the bounds are

* labelled ``(x, y)``: ``ELBO(x, y) = E_q(z|x,y)[log p(x|z,y)]
  - KL(q(z|x,y) || p(z)) + log p(y) <= log p(x, y)`` (the paper's eq. 6);
* unlabelled ``x``: ``-U(x) = sum_y q(y|x) ELBO(x, y) + H(q(y|x)) <= log p(x)``
  (eq. 7), with ``ELBO(x, y)`` computed for all ``C`` classes in one batched
  pass (``x`` tiled over the classes);

and the loss that training minimises is the data-set mean of (eq. 9)
``-ELBO(x, y) - alpha * log q(y|x)`` over labelled and ``U(x)`` over
unlabelled examples.

Batches: every batch is ``(x, y)`` (or ``(x, y, sample_weight)``), labelled
and unlabelled examples mixed, and its loss is the (weighted) mean of the
per-example losses. ``fit(x, y)`` on arrays mixes them at random, which
estimates the data-set mean without bias but, with 100 labels among 50,000
examples, shows a labelled example once in 500: :func:`mixed_batches`
instead draws a small labelled batch from a repeated labelled stream
alongside each unlabelled batch, as the paper does, and gives each example
the weight that keeps the batch loss an unbiased estimate of the same mean
(labelled examples ``N_l / N`` of the batch's weight, unlabelled ``N_u / N``),
so the two ways optimise the same objective; the second sees every label
often.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfvae import latent, networks
from tfvae.datasets import make_dataset
from tfvae.distribute import apply_gradients, optimizer_loss, step_outputs
from tfvae.latent import ACTIVE_UNIT_THRESHOLD
from tfvae.likelihoods import Likelihood
from tfvae.model import VAE
from tfvae.optimizers import FusedAdam
from tfvae.validation import (
    MISSING_LABEL,
    assert_valid_batch,
    check_count,
    check_labels,
    check_number,
    invalid_batch_error,
)

# The paper's weight of the classification term: alpha = 0.1 * N in its
# data-set-sum objective, i.e. 0.1 * N / N_labelled per labelled example.
PAPER_ALPHA_FACTOR = 0.1


def paper_alpha(num_examples: int, num_labelled: int) -> float:
    """Kingma et al. 2014's weight of ``log q(y|x)`` per labelled example:
    ``0.1 * num_examples / num_labelled`` (50 for 100 labels among 50,000)."""
    num_labelled = check_count(num_labelled, "num_labelled")
    num_examples = check_count(num_examples, "num_examples", low=num_labelled)
    return PAPER_ALPHA_FACTOR * num_examples / num_labelled


@keras.saving.register_keras_serializable(package="tfvae")
class SemiSupervisedVAE(VAE):
    """M2: a conditional :class:`tfvae.VAE` and a classifier q(y|x), trained together.

    Args:
        encoder, decoder: the networks of a conditional VAE with
            ``condition_dim=num_classes`` (:func:`tfvae.networks.build_networks`).
        classifier: ``keras.Model`` mapping ``[B, *data_shape]`` to logits
            ``[B, num_classes]``, e.g. :func:`tfvae.networks.mlp_classifier`.
        latent_dim: size of z.
        num_classes: ``C >= 2``.
        alpha: weight of ``log q(y|x)`` per labelled example. ``None`` (the
            default): the paper's rule ``0.1 * N / N_labelled``
            (:func:`paper_alpha`), set by the first ``fit`` on arrays from
            their labels; a ``tf.data`` pipeline needs ``alpha`` given.
        **kwargs: the other arguments of :class:`tfvae.VAE` (likelihood,
            prior, beta, kl_warmup_steps, kl, seed; not ``iw_samples``).

    ``fit``/``evaluate`` take int labels ``[N]`` with ``-1`` for a missing
    label (arrays, or a ``tf.data`` of ``(x, y)`` or ``(x, y, weight)``
    batches such as :func:`mixed_batches`), and report ``loss`` (the mean
    per-example loss above, with ``beta``/warm-up weighting the KL), ``elbo``
    (mean bound on log p(x), ``-U(x)``, over all examples), ``labelled_elbo``
    (mean ``ELBO(x, y)`` over labelled ones), ``cross_entropy`` (mean
    ``-log q(y|x)``) and ``accuracy`` of q(y|x) on the labelled examples.
    ``fit`` on arrays whose labels are all missing is refused, and ``fit``
    raises after the fact if a pipeline gave no labelled example.
    :meth:`predict` gives q(y|x). The inherited :meth:`encode`,
    :meth:`decode`, :meth:`sample` and :meth:`log_likelihood` (log p(x|y))
    take true labels only.
    """

    allows_missing_labels = True

    def __init__(self, encoder: keras.Model, decoder: keras.Model, classifier: keras.Model,
                 latent_dim: int, num_classes: int, alpha: float | None = None, **kwargs):
        if num_classes is None:
            raise ValueError("num_classes must be an integer >= 2, got None.")
        if kwargs.get("iw_samples", 0) > 1:
            raise ValueError("SemiSupervisedVAE does not report iw_elbo; expected iw_samples 0.")
        for name, neutral in (("objective", "elbo"), ("k", 1), ("free_bits", 0.0)):
            if kwargs.get(name, neutral) != neutral:
                raise ValueError(f"SemiSupervisedVAE trains M2's ELBO only; expected {name}="
                                 f"{neutral!r}, got {kwargs[name]!r}.")
        super().__init__(encoder, decoder, latent_dim, num_classes=num_classes, **kwargs)
        self.classifier = classifier
        self._check_classifier()
        self.alpha = None if alpha is None else check_number(alpha, "alpha", low=0.0)
        # A variable, so that fit can set the default without retracing the step.
        self.alpha_weight = self.add_weight(
            name="alpha", shape=(), dtype="float32", trainable=False, autocast=False,
            initializer=keras.initializers.Constant(self.alpha or 0.0))
        self.labelled_elbo_tracker = keras.metrics.Mean(name="labelled_elbo")
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        # Labelled examples seen since fit began (not logged): none is an error.
        self.labelled_seen = keras.metrics.Sum(name="labelled_seen")

    def _check_classifier(self):
        given = (tuple(self.classifier.inputs[0].shape[1:]),
                 tuple(self.classifier.output_shape[1:]))
        wanted = (self.data_shape, (self.num_classes,))
        if len(self.classifier.inputs) != 1 or given != wanted:
            raise ValueError(f"classifier maps {given[0]} to {given[1]}; expected one input "
                             f"{wanted[0]} (the encoder's) to {wanted[1]}, the logits of "
                             f"num_classes={self.num_classes}.")

    # ------------------------------------------------------------- objective
    def class_terms(self, x, training: bool = False, seed=None) -> tuple[tf.Tensor, tf.Tensor]:
        """``(reconstruction, kl)`` of every example under every class, each
        ``[B, C]`` nats: ``-log p(x|z,y)`` at one z ~ q(z|x,y) and
        ``KL(q(z|x,y) || p(z))``, from one pass over ``x`` tiled ``C`` times."""
        x = tf.convert_to_tensor(x)
        classes, batch = self.num_classes, tf.shape(x)[0]
        tiled = tf.reshape(tf.broadcast_to(x[None], tf.concat([[classes], tf.shape(x)], 0)),
                           [-1, *self.data_shape])  # class-major: row c * B + i
        labels = tf.repeat(tf.range(classes), batch)
        reconstruction, kl = self.elbo_terms(tiled, labels, training=training, seed=seed)
        return (tf.transpose(tf.reshape(reconstruction, [classes, batch])),
                tf.transpose(tf.reshape(kl, [classes, batch])))

    def objective_terms(self, x, y, training: bool = False, seed=None, kl_weight=1.0
                        ) -> dict[str, tf.Tensor]:
        """The per-example terms of M2 for a batch ``x`` with int labels ``y``
        ``[B]`` (``-1``: missing), nats:

        * ``loss`` ``[B]``: ``-ELBO(x, y) - alpha log q(y|x)`` for a labelled
          example, ``U(x)`` for an unlabelled one, with the KL weighted by
          ``kl_weight``;
        * ``elbo`` ``[B]``: ``-U(x)``, the bound on log p(x), for every example;
        * ``labelled_elbo`` ``[B]``: ``ELBO(x, y)`` (meaningless where y is -1);
        * ``log_q`` ``[B, C]``: log q(y|x) of every class;
        * ``labelled`` ``[B]`` bool.
        """
        reconstruction, kl = self.class_terms(x, training, seed)
        log_prior_y = -math.log(self.num_classes)  # p(y) uniform
        elbo = log_prior_y - (reconstruction + kl)  # [B, C], bounds on log p(x, y)
        weighted = log_prior_y - (reconstruction + kl_weight * kl)
        log_q = tf.nn.log_softmax(tf.cast(self.classifier(x, training=training), tf.float32))
        q = tf.exp(log_q)
        y = tf.cast(y, tf.int32)
        labelled = y != MISSING_LABEL
        index = tf.maximum(y, 0)[:, None]

        def at_label(t):
            return tf.gather(t, index, batch_dims=1)[:, 0]

        # sum_y q(y|x) (ELBO(x, y) - log q(y|x)) = E_q[ELBO] + H(q)
        loss = tf.where(labelled, -(at_label(weighted) + self.alpha_weight * at_label(log_q)),
                        -tf.reduce_sum(q * (weighted - log_q), axis=-1))
        return {"loss": loss, "elbo": tf.reduce_sum(q * (elbo - log_q), axis=-1),
                "labelled_elbo": at_label(elbo), "log_q": log_q, "labelled": labelled}

    # -------------------------------------------------------------- training
    def _step_terms(self, data, training: bool, step=None):
        """The checked batch's terms, mean loss and labelled mask."""
        x, y, weight = self._checked_batch(data, step)
        terms = self.objective_terms(x, y, training=training, kl_weight=self.kl_weight())
        weight = (tf.ones_like(terms["loss"]) if weight is None
                  else tf.reshape(tf.cast(weight, tf.float32), [-1]))
        terms.update(y=y, weight=weight)
        loss = tf.math.divide_no_nan(tf.reduce_sum(weight * terms["loss"]),
                                     tf.reduce_sum(weight))
        return terms, loss

    def train_step(self, data):
        with tf.GradientTape() as tape:
            terms, loss = self._step_terms(data, True, self.optimizer.iterations + 1)
            if self.losses:
                loss += tf.add_n(self.losses)
            scaled_loss = optimizer_loss(self, loss)
        apply_gradients(self, tape, scaled_loss)
        self._update_m2_metrics(terms)
        return step_outputs(self._metric_results())

    def test_step(self, data):
        terms, _ = self._step_terms(data, False)
        self._update_m2_metrics(terms)
        return step_outputs(self._metric_results())

    def _update_m2_metrics(self, terms):
        labelled = tf.cast(terms["labelled"], tf.float32)
        label = tf.maximum(terms["y"], 0)
        log_q_label = tf.gather(terms["log_q"], label[:, None], batch_dims=1)[:, 0]
        hit = tf.cast(tf.equal(tf.argmax(terms["log_q"], axis=-1, output_type=tf.int32), label),
                      tf.float32)
        self.loss_tracker.update_state(terms["loss"], sample_weight=terms["weight"])
        self.elbo_tracker.update_state(terms["elbo"])
        self.labelled_elbo_tracker.update_state(terms["labelled_elbo"], sample_weight=labelled)
        self.cross_entropy_tracker.update_state(-log_q_label, sample_weight=labelled)
        self.accuracy_tracker.update_state(hit, sample_weight=labelled)
        self.labelled_seen.update_state(tf.reduce_sum(labelled))

    @property
    def metrics(self):
        return [self.loss_tracker, self.elbo_tracker, self.labelled_elbo_tracker,
                self.cross_entropy_tracker, self.accuracy_tracker]

    def _metric_results(self) -> dict[str, tf.Tensor]:
        return {m.name: m.result() for m in self.metrics}

    def fit(self, x=None, y=None, *args, **kwargs):
        """:meth:`tfvae.VAE.fit` with labels ``y`` where ``-1`` marks a missing
        one; sets ``alpha`` by the paper's rule first if it is ``None``.

        Raises:
            ValueError: bad labels (out of range, not integers, wrong count),
                all labels missing, ``alpha=None`` with a ``tf.data`` pipeline,
                or (after training) a pipeline that gave no labelled example;
                and every error of :meth:`tfvae.VAE.fit`.
        """
        if not isinstance(x, tf.data.Dataset) and x is not None:
            labels = check_labels(y, self.num_classes, len(x), "y", allow_missing=True)
            given = int(np.count_nonzero(labels != MISSING_LABEL))
            if not given:
                raise ValueError(f"y has no labels: all {len(labels)} are {MISSING_LABEL} "
                                 f"(missing); expected at least one labelled example.")
            if self.alpha is None:
                self.set_alpha(paper_alpha(len(labels), given))
        elif self.alpha is None:
            raise ValueError("alpha=None takes the paper's rule from the labels of arrays; for a "
                             "tf.data pipeline pass alpha=semi_supervised.paper_alpha(N, "
                             "N_labelled) or call set_alpha first.")
        self.labelled_seen.reset_state()
        history = super().fit(x, y, *args, **kwargs)
        if not int(keras.ops.convert_to_numpy(self.labelled_seen.result())):
            raise ValueError(f"fit saw no labelled example: every label was {MISSING_LABEL} "
                             f"(missing); expected some labelled examples (mixed_batches puts "
                             f"some in every batch).")
        return history

    def set_alpha(self, alpha: float) -> None:
        """Set the weight of ``log q(y|x)`` per labelled example (saved with the model)."""
        self.alpha = check_number(alpha, "alpha", low=0.0)
        self.alpha_weight.assign(self.alpha)

    # ------------------------------------------------------------ inference
    def predict(self, x, *args, **kwargs) -> np.ndarray:
        """q(y|x): class probabilities ``[N, C]`` (``x`` an array, or a
        ``tf.data`` of ``x`` or ``(x, ...)`` batches), after checking ``x``."""
        self._check(x, "x")
        with invalid_batch_error("x"):
            return keras.Model.predict(self, x, *args, **kwargs)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, _ = assert_valid_batch(x, self.likelihood.support)
        return tf.nn.softmax(tf.cast(self.classifier(x, training=False), tf.float32))

    # ------------------------------------------------------- serialisation
    def get_config(self):
        return {**super().get_config(),
                "classifier": keras.saving.serialize_keras_object(self.classifier),
                "alpha": self.alpha}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return super().from_config(config)


def mixed_batches(x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int = 100,
                  labelled_batch_size: int | None = None, seed: int | None = 0
                  ) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of ``(x, y, weight)`` batches for
    :meth:`SemiSupervisedVAE.fit`: each batch holds ``labelled_batch_size``
    labelled examples drawn from a repeated, reshuffled stream of the labelled
    ones, then ``batch_size`` unlabelled examples; one pass over the
    unlabelled examples is one epoch.

    The weights make the batch loss an unbiased estimate of the data-set mean
    loss: each labelled example ``N_l / (N * labelled_batch_size)``, each
    unlabelled one ``N_u / (N * unlabelled in the batch)``.

    Args:
        x: ``[N, *data_shape]`` float32.
        y: int ``[N]``: a class in ``[0, num_classes)``, or ``-1`` (missing).
        num_classes: ``C``.
        batch_size: unlabelled examples per batch.
        labelled_batch_size: labelled examples per batch; default a tenth of
            ``batch_size`` (at most ``N_l``): each label is seen every
            ``N_l / labelled_batch_size`` steps (10 for 100 labels), for a
            tenth more computation per step.
        seed: of the shuffles.

    Raises:
        ValueError: bad labels, no labelled or no unlabelled example, bad sizes.
    """
    batch_size = check_count(batch_size, "batch_size")
    labels = check_labels(y, num_classes, len(x), "y", allow_missing=True)
    labelled = labels != MISSING_LABEL
    n_labelled, n_unlabelled = int(labelled.sum()), int((~labelled).sum())
    if not n_labelled or not n_unlabelled:
        raise ValueError(f"y has {n_labelled} labelled and {n_unlabelled} unlabelled "
                         f"({MISSING_LABEL}) examples; expected some of each (fully labelled "
                         f"data can be given to fit as it is).")
    if labelled_batch_size is None:
        labelled_batch_size = min(n_labelled, max(1, batch_size // 10))
    labelled_batch_size = check_count(labelled_batch_size, "labelled_batch_size")
    x = np.asarray(x, np.float32)
    total = n_labelled + n_unlabelled
    unlabelled_stream = make_dataset(x[~labelled], batch_size=batch_size, seed=seed)
    labelled_stream = (tf.data.Dataset.from_tensor_slices((x[labelled], labels[labelled]))
                       .cache().shuffle(n_labelled, seed=seed, reshuffle_each_iteration=True)
                       .repeat().batch(labelled_batch_size, drop_remainder=True))
    labelled_weight = n_labelled / (total * labelled_batch_size)

    def join(x_unlabelled, labelled_pair):
        x_labelled, y_labelled = labelled_pair
        count = tf.shape(x_unlabelled)[0]
        weight = tf.concat([tf.fill([labelled_batch_size], labelled_weight),
                            tf.fill([count], n_unlabelled / total / tf.cast(count, tf.float32))],
                           axis=0)
        return (tf.concat([x_labelled, x_unlabelled], axis=0),
                tf.concat([y_labelled, tf.fill([count], MISSING_LABEL)], axis=0), weight)

    options = tf.data.Options()
    options.autotune.enabled = False  # as in make_dataset: data in memory, nothing to tune
    return (tf.data.Dataset.zip((unlabelled_stream, labelled_stream)).map(join).prefetch(2)
            .with_options(options))


def pick_labels(y: np.ndarray, per_class: int, num_classes: int | None = None, seed: int = 0
                ) -> np.ndarray:
    """Hide all labels but ``per_class`` of each class: the labelled subset of a
    semi-supervised experiment (e.g. MNIST with 100 labels: ``per_class=10``).

    Args:
        y: int labels ``[N]`` in ``[0, num_classes)``, all given.
        per_class: labels kept per class, chosen at random (by ``seed``).
        num_classes: ``C``; default ``max(y) + 1``.

    Returns:
        int32 ``[N]``: ``y`` where kept, ``-1`` (missing) elsewhere.

    Raises:
        ValueError: bad labels, or a class with fewer than ``per_class`` examples.
    """
    y = np.asarray(y)
    num_classes = check_count(num_classes if num_classes is not None
                              else int(np.max(y, initial=0)) + 1, "num_classes", low=2)
    y = check_labels(y, num_classes, name="y")
    per_class = check_count(per_class, "per_class")
    counts = np.bincount(y, minlength=num_classes)
    if counts.min() < per_class:
        raise ValueError(f"class {int(counts.argmin())} has {int(counts.min())} examples; "
                         f"expected at least per_class={per_class} of every class.")
    rng = np.random.default_rng(seed)
    kept = np.full(len(y), MISSING_LABEL, np.int32)
    for c in range(num_classes):
        chosen = rng.choice(np.flatnonzero(y == c), per_class, replace=False)
        kept[chosen] = c
    return kept


def build_m2(data_shape, num_classes: int, latent_dim: int = 50,
             hidden_units: tuple[int, ...] = (500,), alpha: float | None = None,
             learning_rate: float = 3e-4, seed: int = 0,
             likelihood: str | Likelihood = "bernoulli") -> SemiSupervisedVAE:
    """A compiled M2 with Kingma et al. 2014's MLP networks: encoder, decoder
    (``condition_dim=num_classes``) and classifier q(y|x) of ``hidden_units``
    each, optimised with :class:`tfvae.FusedAdam` at ``learning_rate``.
    ``likelihood`` is p(x|z,y): Bernoulli pixels, or e.g. a learned
    ``Normal`` for real-valued inputs such as :func:`m1_features`."""
    keras.utils.set_random_seed(seed)
    encoder, decoder = networks.build_networks("mlp", data_shape, latent_dim, hidden_units,
                                               condition_dim=num_classes)
    classifier = networks.mlp_classifier(data_shape, num_classes, hidden_units)
    model = SemiSupervisedVAE(encoder, decoder, classifier, latent_dim, num_classes,
                              alpha=alpha, seed=seed, likelihood=likelihood)
    model.compile(optimizer=FusedAdam(learning_rate))
    return model


def m1_features(m1: VAE, x_train: np.ndarray, *others: np.ndarray,
                threshold: float = ACTIVE_UNIT_THRESHOLD) -> list[np.ndarray]:
    """Kingma et al. 2014's M1 as the input of M2 (their "M1+M2"): each
    example's posterior mean under a VAE ``m1`` trained without labels.

    Only the active units are kept (variance of the means over ``x_train``
    above ``threshold``, as :func:`tfvae.latent.active_units` counts them:
    the collapsed ones carry no information about x), and each is
    standardised with ``x_train``'s mean and standard deviation, so that a
    Normal p(features|z,y) starts on a common scale.

    Args:
        m1: a trained unconditional :class:`tfvae.VAE`.
        x_train: ``[N, *data_shape]``, the examples that fix the selection
            and the standardisation.
        *others: more ``[M, *data_shape]`` arrays (e.g. the test images),
            transformed the same way.

    Returns:
        ``[features(x_train), *features(others)]``, each ``[., A]`` float32
        with ``A`` the number of active units.

    Raises:
        ValueError: no unit of ``m1`` is active on ``x_train``.
    """
    means = [latent.posterior_means(m1, x) for x in (x_train, *others)]
    activity = latent.activity_of_means(means[0])
    active = activity > threshold
    if not active.any():
        raise ValueError(f"m1 has no active unit on x_train (largest variance of a posterior "
                         f"mean {activity.max():.3g}, threshold {threshold}); expected a trained "
                         f"VAE whose code depends on x.")
    centre = means[0][:, active].mean(axis=0)
    spread = means[0][:, active].std(axis=0)
    return [((m[:, active] - centre) / spread).astype(np.float32) for m in means]


def supervised_baseline(x: np.ndarray, y: np.ndarray, num_classes: int,
                        hidden_units: tuple[int, ...] = (500,), learning_rate: float = 3e-4,
                        steps: int = 300, seed: int = 0) -> keras.Model:
    """M2's classifier network trained on the labelled examples alone: the
    baseline that M2 must beat. Full-batch Adam on the cross-entropy for
    ``steps`` steps.

    Args:
        x: the labelled images ``[N_l, *data_shape]``.
        y: their int labels ``[N_l]`` (none missing).

    Returns:
        The trained classifier (``[B, *data_shape]`` to logits ``[B, C]``),
        compiled with an ``accuracy`` metric.
    """
    y = check_labels(y, num_classes, len(x), "y")
    steps = check_count(steps, "steps")
    keras.utils.set_random_seed(seed)
    model = networks.mlp_classifier(x.shape[1:], num_classes, hidden_units)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    # One pass of `steps` full batches: as many epochs of one step each, without
    # fit's per-epoch overhead (which dominates so small a step).
    full_batches = tf.data.Dataset.from_tensors((np.asarray(x, np.float32), y)).repeat(steps)
    model.fit(full_batches, epochs=1, verbose=0)
    return model
