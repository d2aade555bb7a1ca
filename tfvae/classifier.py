"""A reference classifier, trained separately on real images, for checking a
conditional VAE: does a sample drawn for class y look like a y to it?

Images are float32 ``[N, *data_shape]`` in [0, 1]; labels int ``[N]`` in
``[0, num_classes)``. The classifier outputs logits ``[N, num_classes]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from tfvae.validation import check_count, check_data, check_labels


def build_classifier(data_shape: Sequence[int], num_classes: int) -> keras.Model:
    """A small conv net: two 3x3 convolutions (32, 64 filters) each followed by
    2x2 max-pooling, dropout, a 128-unit dense layer, then ``num_classes`` logits."""
    inputs = keras.Input(shape=tuple(data_shape), name="x")
    h = inputs
    for i, filters in enumerate((32, 64)):
        h = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv_{i}")(h)
        h = layers.MaxPooling2D(2, name=f"pool_{i}")(h)
    h = layers.Dropout(0.25)(layers.Flatten()(h))
    h = layers.Dense(128, activation="relu", name="hidden")(h)
    outputs = layers.Dense(num_classes, name="logits")(layers.Dropout(0.25)(h))
    return keras.Model(inputs, outputs, name="classifier")


def compiled_classifier(data_shape: Sequence[int], num_classes: int,
                        learning_rate: float = 1e-3, seed: int = 0,
                        decay_steps: int | None = None) -> keras.Model:
    """:func:`build_classifier` (weights drawn with ``seed``), compiled with Adam
    and cross-entropy on int labels, untrained: ``fit(x, y)`` trains it
    (what :func:`train_classifier` does; the notebooks pass it to
    :func:`tfvae.notebook.fit_or_load`). ``evaluate`` reports ``accuracy``.

    ``decay_steps``: if given, the step size follows a cosine decay from
    ``learning_rate`` to 5% of it over that many steps (the whole training:
    the last epochs then settle instead of jumping around the minimum)."""
    num_classes = check_count(num_classes, "num_classes", low=2)
    keras.utils.set_random_seed(seed)
    model = build_classifier(data_shape, num_classes)
    if decay_steps is not None:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, check_count(decay_steps, "decay_steps"), alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def train_classifier(x: np.ndarray, y: np.ndarray, num_classes: int, epochs: int = 5,
                     batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0,
                     verbose: int = 0) -> keras.Model:
    """Train :func:`compiled_classifier` on ``(x, y)``, the step size decaying
    over the ``epochs`` (cosine, to 5%).

    Returns:
        The trained classifier (compiled; ``evaluate`` reports ``accuracy``).
    """
    num_classes = check_count(num_classes, "num_classes", low=2)
    check_data(x, x.shape[1:], (0.0, 1.0), "x")
    y = check_labels(y, num_classes, len(x), "y")
    epochs = check_count(epochs, "epochs")
    decay_steps = epochs * -(-len(x) // check_count(batch_size, "batch_size"))
    model = compiled_classifier(x.shape[1:], num_classes, learning_rate, seed, decay_steps)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)
    return model


def predict_labels(classifier: keras.Model, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """The classifier's most likely class of each image: int ``[N]``."""
    check_data(x, classifier.input_shape[1:], (0.0, 1.0), "x")
    return np.argmax(classifier.predict(x, batch_size=batch_size, verbose=0), axis=-1)


def accuracy(classifier: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x`` that the classifier labels as ``y``."""
    num_classes = classifier.output_shape[-1]
    y = check_labels(y, num_classes, len(x), "y")
    return float(np.mean(predict_labels(classifier, x) == y))


def conditional_sample_accuracy(model, classifier: keras.Model, per_class: int = 100,
                                seed: int = 0, mean: bool = True) -> dict:
    """How often samples of a conditional VAE drawn for class y are labelled y.

    Draws ``per_class`` samples x ~ p(x|z,y) (``mean``: E[x|z,y], the images
    that ``tfvae sample`` writes) with z ~ p(z) for every class y and
    classifies them.

    Args:
        model: a :class:`tfvae.VAE` with ``num_classes``.
        classifier: e.g. from :func:`train_classifier` on the real training images.

    Returns:
        ``{"accuracy": fraction over all samples, "per_class": [fraction of
        each class], "per_class_samples": per_class}``.
    """
    classes = getattr(model, "num_classes", None)
    if classes is None:
        raise ValueError("model is unconditional (num_classes=None); expected a conditional VAE.")
    if classifier.output_shape[-1] != classes:
        raise ValueError(f"classifier has {classifier.output_shape[-1]} classes; expected "
                         f"{classes}, the model's.")
    per_class = check_count(per_class, "per_class", low=1)
    wanted = np.repeat(np.arange(classes), per_class)
    images = np.clip(model.sample(len(wanted), seed=seed, mean=mean, labels=wanted).numpy(),
                     0.0, 1.0)
    hit = predict_labels(classifier, images) == wanted
    return {"accuracy": float(hit.mean()),
            "per_class": [float(h) for h in hit.reshape(classes, per_class).mean(axis=1)],
            "per_class_samples": per_class}
