"""tfvae.latent against direct computations with the model and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import small_vae
from scipy.stats import norm

from tfvae import latent


@pytest.fixture
def images() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((7, 4, 4, 1)) < 0.4).astype(np.float32)


def test_inverse_cdf_coordinates_are_normal_quantiles():
    got = latent.inverse_cdf_coordinates(9, 0.05, 0.95)
    np.testing.assert_allclose(got, norm.ppf(np.linspace(0.05, 0.95, 9)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(latent.inverse_cdf_coordinates(3, 0.01, 0.99),
                               norm.ppf([0.01, 0.5, 0.99]), atol=1e-12)


def test_inverse_cdf_grid_orientation():
    n = 5
    grid = latent.inverse_cdf_grid(n)
    c = norm.ppf(np.linspace(0.05, 0.95, n))
    assert grid.shape == (n, n, 2) and grid.dtype == np.float32
    for i in range(n):
        for j in range(n):
            # z1 grows along a row (left to right), z2 shrinks down the rows.
            np.testing.assert_allclose(grid[i, j], [c[j], c[n - 1 - i]], atol=1e-6)


@pytest.mark.parametrize("bad", [dict(n=0), dict(n=2.5), dict(n=3, low=0.0), dict(n=3, high=1.0),
                                 dict(n=3, low=0.9, high=0.1)])
def test_inverse_cdf_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        latent.inverse_cdf_coordinates(**bad)


def test_posterior_means_match_encode_across_batches(images):
    model = small_vae()
    expected = np.asarray(model.encode(images).mean())
    got = latent.posterior_means(model, images, batch_size=3)  # 3 + 3 + 1
    assert got.shape == (7, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_interpolation_endpoints_are_decoded_posterior_means(images):
    model = small_vae()
    steps = 6
    path = latent.interpolate(model, images[0], images[1], steps=steps)
    assert path.shape == (steps, 4, 4, 1)
    mu = np.asarray(model.encode(images[:2]).mean())
    ends = np.asarray(model.decode(mu).mean())
    np.testing.assert_allclose(path[0], ends[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(path[-1], ends[1], rtol=1e-5, atol=1e-6)
    # An interior point decodes the convex combination of the two means.
    t = 2 / (steps - 1)
    middle = np.asarray(model.decode(((1 - t) * mu[0] + t * mu[1])[None]).mean())[0]
    np.testing.assert_allclose(path[2], middle, rtol=1e-5, atol=1e-6)
    # Distinct inputs give distinct endpoints (the check above is not vacuous).
    assert np.abs(path[0] - path[-1]).max() > 1e-4


def test_interpolation_accepts_batches_of_one_and_checks_shapes(images):
    model = small_vae()
    a = latent.interpolate(model, images[0], images[1], steps=3)
    b = latent.interpolate(model, images[:1], images[1:2], steps=3)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match="x_b has shape"):
        latent.interpolate(model, images[0], images[:2])
    with pytest.raises(ValueError, match="steps"):
        latent.interpolate(model, images[0], images[1], steps=1)


def test_decode_grid_decodes_the_grid():
    model = small_vae(latent_dim=2)
    got = latent.decode_grid(model, n=4)
    assert got.shape == (4, 4, 4, 4, 1)
    z = latent.inverse_cdf_grid(4).reshape(16, 2)
    expected = np.asarray(model.decode(z).mean()).reshape(got.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="latent_dim 2"):
        latent.decode_grid(small_vae(latent_dim=3), n=4)


def test_active_units_count_dimensions_whose_posterior_mean_varies(images):
    model = small_vae()
    mu = np.asarray(model.encode(images).mean(), np.float64)
    np.testing.assert_allclose(latent.unit_activity(model, images, batch_size=3),
                               np.var(mu, axis=0), rtol=1e-5, atol=1e-9)
    variances = np.sort(np.var(mu, axis=0))
    # A threshold between the smallest and the next counts all but one dimension.
    between = float(variances[0] + variances[1]) / 2
    assert latent.active_units(model, images, threshold=between) == 2
    assert latent.active_units(model, images, threshold=0.0) == 3
    assert latent.active_units(model, images, threshold=float(variances[-1]) + 1) == 0
    with pytest.raises(ValueError, match="threshold"):
        latent.active_units(model, images, threshold=-1.0)


def test_log_aggregate_posterior_is_the_mixture_of_the_posteriors(images):
    from scipy.special import logsumexp

    model = small_vae()
    q = model.encode(images)
    mu, sd = np.asarray(q.mean(), np.float64), np.asarray(q.stddev(), np.float64)
    z = np.random.default_rng(2).normal(size=(5, 3))
    # log (1/N) sum_n prod_j N(z_j; mu_nj, sd_nj), by SciPy
    per_pair = norm.logpdf(z[:, None, :], mu[None], sd[None]).sum(-1)  # [M, N]
    expected = logsumexp(per_pair, axis=1) - np.log(len(images))
    got = latent.log_aggregate_posterior(model, images, z, batch_size=2)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected \[M, 3\]"):
        latent.log_aggregate_posterior(model, images, z[:, :2])
