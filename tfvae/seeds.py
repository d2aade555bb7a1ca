"""Stateless random seeds, as TFP's samplers take them."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def stateless_seed(seed: int | tf.Tensor | None) -> tf.Tensor:
    """An int32 ``[2]`` seed for stateless sampling.

    An int always gives the same seed (``tfp.random.sanitize_seed(int)`` does
    not: it draws from a stateful generator); ``None`` gives a fresh random
    one; a ``[2]`` tensor is passed through as int32.
    """
    if seed is None:
        seed = int(np.random.default_rng().integers(2**62))
    if isinstance(seed, (int, np.integer)):
        seed = int(seed)
        return tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int32)
    return tf.cast(seed, tf.int32)
