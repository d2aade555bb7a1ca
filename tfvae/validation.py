"""Checks on user input, run eagerly before any training or inference.

Every check raises ``ValueError`` naming what was found and what was expected,
so that a wrong array fails in one clear line instead of deep inside a graph
(or, worse, trains to NaN).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

# Tag of the in-graph batch check's error, so that it can be told apart.
INVALID_BATCH = "tfvae-invalid-batch"


def check_number(value, name: str, low: float | None = None, strict: bool = False) -> float:
    """``value`` as a float, if it is a finite real number ``>= low`` (``> low`` if strict).

    Raises:
        ValueError: a bool, a non-number, NaN/inf, or out of range.
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (low is None or value > low or (value == low and not strict))
    if not ok:
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}.")
    return value


def check_count(value, name: str, low: int = 1) -> int:
    """``value`` as an int, if it is an integer (not a bool or a float) ``>= low``.

    Raises:
        ValueError: naming ``name``, what was given and what was expected.
    """
    if (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            and value >= low):
        return int(value)
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def check_data(
    x,
    data_shape: Sequence[int],
    support: tuple[float | None, float | None] = (None, None),
    name: str = "x",
) -> None:
    """Check a batch or array of examples against the model's data contract.

    Args:
        x: array-like of shape ``[N, *data_shape]``, floating point.
        data_shape: the shape of one example, e.g. ``(28, 28, 1)``.
        support: ``(low, high)`` bounds of the likelihood (``None``: unbounded).
        name: what to call ``x`` in messages.

    Raises:
        ValueError: wrong rank/shape, non-float dtype, NaN/inf, or values
            outside ``support``.
    """
    data_shape = tuple(int(d) for d in data_shape)
    dtype = tf.as_dtype(x.dtype) if hasattr(x, "dtype") else None
    if dtype is None:
        x = np.asarray(x)
        dtype = tf.as_dtype(x.dtype)
    if not dtype.is_floating:
        raise ValueError(
            f"{name} has dtype {dtype.name}; expected a floating dtype (float32) with "
            f"values in the likelihood's support. Convert it first, e.g. "
            f"x.astype('float32') / 255 for 8-bit images."
        )
    shape = tuple(x.shape)
    if len(shape) != len(data_shape) + 1 or tuple(shape[1:]) != data_shape:
        raise ValueError(
            f"{name} has shape {shape}; expected (batch, {', '.join(map(str, data_shape))}) "
            f"to match the model's data shape {data_shape}."
        )
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {shape}); expected at least one example.")
    values = x.numpy() if isinstance(x, tf.Tensor) else np.asarray(x)
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.size(values) - np.count_nonzero(finite))
        kinds = [k for k, f in (("NaN", np.isnan), ("inf", np.isinf)) if f(values).any()]
        raise ValueError(
            f"{name} contains {bad} non-finite value(s) ({' and '.join(kinds)}); "
            "expected finite numbers."
        )
    low, high = support
    if values.size and (
        (low is not None and values.min() < low) or (high is not None and values.max() > high)
    ):
        raise ValueError(
            f"{name} has values in [{values.min():.8g}, {values.max():.8g}]; the likelihood "
            f"expects values in {_interval(support)} (for pixels: scale to [0, 1])."
        )


def _interval(support) -> str:
    low, high = support
    return f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"


def assert_valid_batch(x: tf.Tensor, support: tuple[float | None, float | None],
                       step: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """``(x, bad)``: ``x`` after an in-graph check that it is finite and inside
    ``support``, and ``bad``, its number of values that are not.

    For compiled training and test steps: every batch of a ``tf.data``
    pipeline is checked, not only the first (three reductions over the batch;
    the bad values are counted only in a bad batch).
    A bad batch raises ``InvalidArgumentError`` tagged ``INVALID_BATCH``;
    :func:`invalid_batch_error` turns it into a one-line ``ValueError``. XLA
    (``jit_compile=True``) drops assertions, so callers also keep ``bad``
    (:class:`tfvae.VAE` sums it and raises after the compiled function ran).
    """
    x = tf.convert_to_tensor(x)
    low, high = support
    # Three reductions decide: the sum is NaN/inf if any value is; min and max bound the rest.
    smallest, largest = tf.reduce_min(x), tf.reduce_max(x)
    good = tf.math.is_finite(tf.reduce_sum(x))
    if low is not None:
        good &= smallest >= low
    if high is not None:
        good &= largest <= high

    def count_bad():  # runs only for a bad batch
        inside = tf.math.is_finite(x)
        if low is not None:
            inside &= x >= low
        if high is not None:
            inside &= x <= high
        return tf.size(x) - tf.math.count_nonzero(inside, dtype=tf.int32)

    bad = tf.cond(good, lambda: tf.constant(0, tf.int32), count_bad)
    data = [INVALID_BATCH, "step", -1 if step is None else step, "bad", bad,
            "min", smallest, "max", largest]
    check = tf.debugging.Assert(good, data, summarize=1)
    with tf.control_dependencies([check]):
        return tf.identity(x), bad


def invalid_values_message(name: str, where: str, bad) -> str:
    """The one-line message for ``bad`` invalid values found in ``where``."""
    return (f"{name}: {where} has {bad} value(s) that are NaN, inf or outside the likelihood's "
            f"support")


@contextlib.contextmanager
def invalid_batch_error(name: str) -> Iterator[None]:
    """Turn the error of :func:`assert_valid_batch` into one ``ValueError`` line."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        if INVALID_BATCH not in str(error):
            raise
        found = dict(re.findall(r"\[(step|bad|min|max)\] \[([^\]]*)\]", str(error)))
        where = (f"the batch of training step {found['step']}" if found.get("step", "-1") != "-1"
                 else "a batch")
        raise ValueError(
            f"{invalid_values_message(name, where, found.get('bad', 'some'))} (batch min "
            f"{found.get('min')}, max {found.get('max')}); expected finite values in the "
            f"likelihood's support (for pixels: [0, 1])."
        ) from None


def first_batch(data):
    """The inputs ``x`` of the first element of ``data``, for checking.

    ``data`` may be an array, a tensor, a ``tf.data.Dataset`` (of ``x`` or of
    ``(x, ...)`` tuples) or a Python generator-free iterable of batches.
    Returns ``None`` when nothing can be looked at without consuming it.
    """
    if isinstance(data, tf.data.Dataset):
        for element in data.take(1):
            return element[0] if isinstance(element, (tuple, list)) else element
        return None
    if isinstance(data, (np.ndarray, tf.Tensor)) or hasattr(data, "__array__"):
        return data
    return None


# ------------------------------------------------------------ class labels
# Tag of the in-graph label check's error (see assert_valid_labels).
INVALID_LABELS = "tfvae-invalid-labels"
# The label of an unlabelled example, accepted only where ``allow_missing``
# says so (the training data of tfvae.semi_supervised.SemiSupervisedVAE).
MISSING_LABEL = -1


def _expected_labels(num_classes: int, allow_missing: bool) -> str:
    missing = f", or {MISSING_LABEL} for a missing label," if allow_missing else ""
    return f"one integer class label in [0, {num_classes - 1}]{missing} per example"


def check_labels(y, num_classes: int, count: int | None = None, name: str = "y",
                 allow_missing: bool = False) -> np.ndarray:
    """Class labels as int32 ``[N]``, if they are one integer in ``[0, num_classes)``
    per example (integer dtype, or floats holding whole numbers).

    Args:
        y: array-like ``[N]`` (not one-hot).
        num_classes: the model's number of classes.
        count: the number of examples the labels go with (``None``: any).
        name: what to call ``y`` in messages.
        allow_missing: also accept ``MISSING_LABEL`` (-1), an unlabelled example.

    Raises:
        ValueError: missing, wrong dtype or shape, wrong count, NaN/inf,
            non-integer values or labels out of range.
    """
    expected = _expected_labels(num_classes, allow_missing)
    if y is None:
        raise ValueError(f"{name} is missing: this VAE is conditional ({num_classes} classes); "
                         f"expected {expected}.")
    values = y.numpy() if isinstance(y, tf.Tensor) else np.asarray(y)
    if values.dtype.kind not in "iuf":
        raise ValueError(f"{name} has dtype {values.dtype}; expected {expected} (an integer "
                         f"dtype).")
    if values.ndim != 1:
        hint = " (integer labels, not one-hot: use argmax)" if values.ndim == 2 else ""
        raise ValueError(f"{name} has shape {values.shape}; expected ({count or 'N'},): "
                         f"{expected}{hint}.")
    if count is not None and len(values) != count:
        raise ValueError(f"{name} has {len(values)} labels for {count} examples; expected "
                         f"{expected}.")
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            raise ValueError(f"{name} contains {np.size(values) - np.count_nonzero(finite)} "
                             f"NaN or inf value(s); expected {expected}.")
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise ValueError(f"{name} has {fractional.size} non-integer value(s) (e.g. "
                             f"{fractional[0]:g}); expected {expected}.")
    low = MISSING_LABEL if allow_missing else 0
    if values.size and (values.min() < low or values.max() >= num_classes):
        hint = (f" ({MISSING_LABEL} marks a missing label only for "
                f"tfvae.semi_supervised.SemiSupervisedVAE)"
                if not allow_missing and values.min() == MISSING_LABEL else "")
        raise ValueError(f"{name} has labels in [{values.min():g}, {values.max():g}]; expected "
                         f"{expected}{hint}.")
    return values.astype(np.int32)


def assert_valid_labels(y: tf.Tensor, num_classes: int, allow_missing: bool = False
                        ) -> tuple[tf.Tensor, tf.Tensor]:
    """``(labels, bad)``: int32 labels after an in-graph check that each is a whole
    number in ``[0, num_classes)`` (or ``MISSING_LABEL`` with ``allow_missing``),
    and ``bad``, how many are not.

    For the compiled steps (every batch of a pipeline, not only the first);
    a bad batch raises ``InvalidArgumentError`` tagged ``INVALID_LABELS``,
    which :func:`invalid_labels_error` turns into a ``ValueError``. Under XLA,
    which drops assertions, callers keep ``bad``.
    """
    y = tf.convert_to_tensor(y)
    inside = (y >= (MISSING_LABEL if allow_missing else 0)) & (y < num_classes)
    if y.dtype.is_floating:
        inside &= tf.equal(y, tf.round(y))  # False for NaN
    bad = tf.size(y) - tf.math.count_nonzero(inside, dtype=tf.int32)
    check = tf.debugging.Assert(tf.equal(bad, 0), [INVALID_LABELS, "bad", bad], summarize=1)
    with tf.control_dependencies([check]):
        return tf.cast(y, tf.int32), bad


def invalid_labels_message(name: str, bad, num_classes: int, allow_missing: bool = False) -> str:
    """The one-line message for ``bad`` labels outside ``[0, num_classes)``
    (and not ``MISSING_LABEL`` where ``allow_missing``)."""
    low = MISSING_LABEL if allow_missing else 0
    return (f"{name}: a batch has {bad} label(s) that are not integers in [{low}, "
            f"{num_classes - 1}]; expected {_expected_labels(num_classes, allow_missing)}")


@contextlib.contextmanager
def invalid_labels_error(name: str, num_classes: int, allow_missing: bool = False
                         ) -> Iterator[None]:
    """Turn the error of :func:`assert_valid_labels` into one ``ValueError`` line."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        if INVALID_LABELS not in str(error):
            raise
        found = re.search(r"\[bad\] \[([^\]]*)\]", str(error))
        bad = found[1] if found else "some"
        raise ValueError(f"{invalid_labels_message(name, bad, num_classes, allow_missing)}."
                         ) from None
