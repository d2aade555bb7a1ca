"""Helpers for exploring a trained VAE's latent space.

Shapes: ``N`` examples, ``D = model.latent_dim``, ``data_shape`` the shape of
one example (e.g. ``(28, 28, 1)``). Images returned are the likelihood's mean
``E[x|z]`` (pixel probabilities for a Bernoulli decoder), as float32 NumPy.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def _as_batch(x, data_shape: tuple[int, ...], name: str) -> np.ndarray:
    """One example ``data_shape`` or a batch of one ``[1, *data_shape]`` -> ``[1, *data_shape]``."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape == tuple(data_shape):
        return x[None]
    if x.shape == (1, *data_shape):
        return x
    raise ValueError(
        f"{name} has shape {x.shape}; expected one example of shape {tuple(data_shape)} "
        f"(or (1, {', '.join(map(str, data_shape))}))."
    )


def posterior_means(model, x, batch_size: int = 500) -> np.ndarray:
    """Means of q(z|x) for every example: ``[N, D]`` float32.

    Args:
        model: a :class:`tfvae.VAE`.
        x: ``[N, *data_shape]`` inputs (checked by ``model.encode``).
        batch_size: examples encoded at a time.
    """
    x = np.asarray(x, dtype=np.float32)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    parts = [np.asarray(model.encode(x[i:i + batch_size]).mean())
             for i in range(0, len(x), batch_size)]
    if not parts:
        raise ValueError("x is empty; expected at least one example.")
    return np.concatenate(parts, axis=0)


# Burda et al. (2015): a latent dimension is active when its posterior mean varies
# across inputs by more than this (variance, in squared latent units).
ACTIVE_UNIT_THRESHOLD = 0.01


def unit_activity(model, x, batch_size: int = 500) -> np.ndarray:
    """Cov_x(E_q[z_j|x]) of each latent dimension: ``[D]`` float64.

    The variance over the examples ``x`` of the posterior means
    (:func:`posterior_means`; with a flow posterior, the flow of the base
    Gaussian's mean). A dimension whose q(z_j|x) is the same for every x
    (posterior collapse) has activity 0.
    """
    return activity_of_means(posterior_means(model, x, batch_size))


def activity_of_means(means: np.ndarray) -> np.ndarray:
    """:func:`unit_activity` from posterior means already computed, ``[N, D]``
    -> ``[D]`` float64 (for callers that need the means themselves too)."""
    return np.asarray(means).astype(np.float64).var(axis=0)


def active_units(model, x, threshold: float = ACTIVE_UNIT_THRESHOLD,
                 batch_size: int = 500) -> int:
    """The number of active latent dimensions (Burda et al. 2015): those whose
    :func:`unit_activity` over ``x`` exceeds ``threshold`` (0.01 in the paper)."""
    if not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0 (a variance), got {threshold!r}.")
    return int(np.sum(unit_activity(model, x, batch_size) > threshold))


def log_aggregate_posterior(model, x, z, batch_size: int = 100) -> np.ndarray:
    """log q(z) of the aggregate posterior q(z) = (1/N) sum_n q(z|x_n): ``[M]`` float64.

    The density of all the codes of ``x`` (``[N, *data_shape]``) together,
    at each row of ``z`` (``[M, D]``), in nats; rows of ``z`` are scored
    ``batch_size`` at a time, against all N posteriors at once.
    """
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != model.latent_dim:
        raise ValueError(f"z has shape {z.shape}; expected [M, {model.latent_dim}] "
                         f"(latent_dim {model.latent_dim}).")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    q = model.encode(np.asarray(x, dtype=np.float32))  # batch [N], event [D]
    parts = [np.asarray(q.log_prob(z[i:i + batch_size, None, :]), np.float64)  # [m, N]
             for i in range(0, len(z), batch_size)]
    if not parts:
        raise ValueError("z is empty; expected at least one row.")
    log_q = np.concatenate(parts)
    top = log_q.max(axis=1, keepdims=True)  # logsumexp over n, in float64
    return (top[:, 0] + np.log(np.exp(log_q - top).sum(axis=1))) - np.log(log_q.shape[1])


def decode_mean(model, z) -> np.ndarray:
    """``E[x|z]`` for latent codes ``z`` of shape ``[..., D]``: ``[..., *data_shape]``."""
    return np.asarray(model.decode(np.asarray(z, dtype=np.float32)).mean())


def interpolate(model, x_a, x_b, steps: int = 10) -> np.ndarray:
    """Decode a straight line between two inputs' posterior means.

    ``z_t = (1 - t) mu_a + t mu_b`` for ``t`` in ``linspace(0, 1, steps)``,
    where ``mu = E_q[z|x]``; so the first and last images are the decodes
    of ``x_a``'s and ``x_b``'s posterior means.

    Args:
        model: a :class:`tfvae.VAE`.
        x_a, x_b: one example each, shape ``data_shape`` (or ``[1, *data_shape]``).
        steps: number of images, at least 2.

    Returns:
        ``[steps, *data_shape]`` float32 images ``E[x|z_t]``.
    """
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (both endpoints), got {steps!r}.")
    data_shape = tuple(model.data_shape)
    both = np.concatenate([_as_batch(x_a, data_shape, "x_a"), _as_batch(x_b, data_shape, "x_b")])
    mu_a, mu_b = posterior_means(model, both)
    t = np.linspace(0.0, 1.0, int(steps), dtype=np.float32)[:, None]
    return decode_mean(model, (1.0 - t) * mu_a + t * mu_b)


def inverse_cdf_coordinates(n: int, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """``n`` standard-normal quantiles of evenly spaced probabilities: ``[n]`` float64.

    ``Phi^{-1}(linspace(low, high, n))``: Kingma & Welling (2013, fig. 4)
    map a regular grid on the unit square through the inverse CDF of the
    Gaussian prior, so that each cell holds equal prior mass.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    if not 0.0 < low <= high < 1.0:
        raise ValueError(f"need 0 < low <= high < 1 (probabilities), got low={low}, high={high}.")
    standard = NormalDist()
    return np.array([standard.inv_cdf(p) for p in np.linspace(low, high, int(n))])


def inverse_cdf_grid(n: int, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """A 2-D latent grid for manifold plots: ``[n, n, 2]`` float32.

    ``grid[i, j] = (c[j], c[n - 1 - i])`` with ``c = inverse_cdf_coordinates(n, low, high)``:
    ``z_1`` grows left to right along columns and ``z_2`` grows bottom to top,
    as on a plot with the usual axes.
    """
    c = inverse_cdf_coordinates(n, low, high)
    z1, z2 = np.meshgrid(c, c[::-1])
    return np.stack([z1, z2], axis=-1).astype(np.float32)


def decode_grid(model, n: int = 20, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """Decode :func:`inverse_cdf_grid` with a 2-D latent model: ``[n, n, *data_shape]``."""
    if model.latent_dim != 2:
        raise ValueError(
            f"the manifold grid needs a model with latent_dim 2, got latent_dim {model.latent_dim}."
        )
    return decode_mean(model, inverse_cdf_grid(n, low, high))
