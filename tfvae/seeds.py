"""Randomness made repeatable: stateless seeds for TFP's samplers, fixed random subsets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf


def stateless_seed(seed: int | tf.Tensor | None) -> tf.Tensor:
    """An int32 ``[2]`` seed for stateless sampling.

    An int always gives the same seed (``tfp.random.sanitize_seed(int)`` does
    not: it draws from a stateful generator); ``None`` gives a fresh random
    one; a ``[2]`` tensor is passed through as int32.
    """
    import tensorflow as tf  # here, so that the command line starts without TensorFlow

    if seed is None:
        seed = int(np.random.default_rng().integers(2**62))
    if isinstance(seed, (int, np.integer)):
        seed = int(seed)
        return tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int32)
    return tf.cast(seed, tf.int32)


def subset_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray | None:
    """Sorted indices of a fixed random subset of ``limit`` of ``n`` items, or
    None when ``limit`` keeps them all (files may be sorted by class, so a
    prefix would not do)."""
    if limit is None or limit >= n:
        return None
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])
