"""Wall-clock speed of a model's sampler, measured the same way by the benchmarks and notebooks.

A sampler is any ``sample(n, seed) -> [n, ...]`` array-like (e.g.
``lambda n, s: vae.sample(n, seed=s)``); times are seconds of
``time.perf_counter``, converting the result to NumPy included (so lazily
computed tensors are finished).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from tfvae.validation import check_count


def sampling_speed(sample: Callable[[int, int], object], n: int, rounds: int = 5
                   ) -> tuple[dict, np.ndarray]:
    """Images per second of ``sample(n, seed)``, the median of ``rounds`` timed calls.

    A first, untimed call of ``min(n, 2)`` images (seed 0) traces and compiles
    the sampler, so that compilation is not counted; the timed rounds use seeds
    ``1 .. rounds``.

    Args:
        sample: ``sample(n, seed)`` returning ``n`` images.
        n: images per timed call, at least 1.
        rounds: timed calls, at least 1.

    Returns:
        ``(speed, images)``: ``speed`` holds ``images_per_call`` (``n``),
        ``seconds_per_call`` (a list, one per round), ``images_per_second``
        and ``seconds_per_image`` (both from the median round); ``images`` is
        the last round's output as a NumPy array.

    Raises:
        ValueError: ``n`` or ``rounds`` is not an integer >= 1.
    """
    n, rounds = check_count(n, "n"), check_count(rounds, "rounds")
    np.asarray(sample(min(n, 2), 0))  # traces and compiles
    seconds, images = [], None
    for r in range(rounds):
        t0 = time.perf_counter()
        images = np.asarray(sample(n, r + 1))
        seconds.append(time.perf_counter() - t0)
    per_call = statistics.median(seconds)
    return {"images_per_call": n, "seconds_per_call": seconds,
            "images_per_second": n / per_call, "seconds_per_image": per_call / n}, images
