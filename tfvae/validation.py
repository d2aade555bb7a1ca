"""Checks on user input, run eagerly before any training or inference.

Every check raises ``ValueError`` naming what was found and what was expected,
so that a wrong array fails in one clear line instead of deep inside a graph
(or, worse, trains to NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


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
            f"{name} has values in [{values.min():.4g}, {values.max():.4g}]; the likelihood "
            f"expects values in [{'-inf' if low is None else f'{low:g}'}, "
            f"{'inf' if high is None else f'{high:g}'}] (for pixels: scale to [0, 1])."
        )


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
