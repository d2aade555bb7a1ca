"""tfvae.plot: pixel layout of grids, PNG files, and what the figures draw."""

from __future__ import annotations

import os

import matplotlib.image
import numpy as np
import pytest
from helpers import small_vae
from matplotlib.figure import Figure

from tfvae import latent, plot


def constant_images(n, h=3, w=2):
    """Image k is filled with the value (k + 1) / (n + 1)."""
    values = (np.arange(n) + 1) / (n + 1)
    return np.broadcast_to(values[:, None, None, None], (n, h, w, 1)).astype(np.float32)


def test_tile_places_images_row_by_row_with_padding():
    images = constant_images(5)  # 3x2 images, 3 per row -> 2 rows
    grid = plot.tile(images, ncols=3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 2 + 2)
    for k in range(5):
        r, c = divmod(k, 3)
        cell = grid[r * 4:r * 4 + 3, c * 3:c * 3 + 2]
        np.testing.assert_array_equal(cell, images[k, ..., 0])
    # Padding lines and the unused sixth cell are white.
    np.testing.assert_array_equal(grid[3, :], 1.0)
    np.testing.assert_array_equal(grid[:, 2], 1.0)
    np.testing.assert_array_equal(grid[4:, 6:], 1.0)


def test_tile_default_columns_colour_and_errors():
    assert plot.tile(constant_images(10), pad=0).shape == (3 * 3, 4 * 2)  # 4 columns, 3 rows
    colour = np.random.default_rng(0).random((2, 3, 3, 3)).astype(np.float32)
    grid = plot.tile(colour, pad=0)
    assert grid.shape == (3, 6, 3)
    np.testing.assert_array_equal(grid[:, 3:], colour[1])
    with pytest.raises(ValueError, match="expected"):
        plot.tile(np.zeros((2, 3, 3, 2)))
    with pytest.raises(ValueError, match="empty"):
        plot.tile(np.zeros((0, 3, 3)))


def test_image_grid_shows_the_tiled_array():
    images = constant_images(4)
    fig = plot.image_grid(images, ncols=2, title="four")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    np.testing.assert_array_equal(ax.images[0].get_array(), plot.tile(images, 2))
    assert ax.get_title() == "four"
    # Drawing into a given axes returns that axes' figure.
    other = Figure()
    target = other.add_subplot()
    assert plot.image_grid(images, ax=target) is other and len(target.images) == 1


def test_save_image_grid_writes_the_pixels(tmp_path):
    images = constant_images(3)
    path = tmp_path / "grid.png"
    plot.save_image_grid(images, path, ncols=3)
    pixels = matplotlib.image.imread(path)
    expected = plot.tile(images, 3)
    assert pixels.shape[:2] == expected.shape
    np.testing.assert_allclose(pixels[..., 0], expected, atol=1 / 255 + 1e-6)
    assert os.listdir(tmp_path) == ["grid.png"]  # no temporary file left behind


def test_save_image_grid_leaves_no_partial_file(tmp_path):
    path = tmp_path / "grid.png"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):
        plot.save_image_grid(np.zeros((2, 3, 3, 2)), path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["grid.png"]


def test_training_curves_plot_the_history():
    history = {"reconstruction": [3.0, 2.0, 1.5], "val_reconstruction": [3.1, 2.2, 1.9],
               "kl": [0.5, 0.7, 0.8]}
    fig = plot.training_curves(history, metrics=("reconstruction", "kl"))
    rec_ax, kl_ax = fig.axes
    np.testing.assert_array_equal(rec_ax.lines[0].get_ydata(), history["reconstruction"])
    np.testing.assert_array_equal(rec_ax.lines[1].get_ydata(), history["val_reconstruction"])
    np.testing.assert_array_equal(rec_ax.lines[0].get_xdata(), [1, 2, 3])
    assert len(kl_ax.lines) == 1
    with pytest.raises(ValueError, match="elbo"):
        plot.training_curves(history, metrics=("elbo",))


def test_latent_scatter_draws_the_codes():
    z = np.random.default_rng(0).normal(size=(50, 2))
    labels = np.arange(50) % 10
    fig = plot.latent_scatter(z, labels)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), z)
    np.testing.assert_array_equal(fig.axes[0].collections[0].get_array(), labels)
    sub = plot.latent_scatter(z, labels, max_points=20)
    assert len(sub.axes[0].collections[0].get_offsets()) == 20
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot.latent_scatter(np.zeros((5, 3)))


def test_manifold_and_interpolation_strip_show_decodes():
    model = small_vae(latent_dim=2)
    fig = plot.manifold(model, n=3)
    decoded = latent.decode_grid(model, 3)
    expected = plot.tile(decoded.reshape(9, 4, 4, 1), ncols=3)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), expected)
    strip = plot.interpolation_strip(decoded[0])
    assert strip.axes[0].images[0].get_array().shape == (4, 3 * 4 + 2)


def test_kl_per_dimension_draws_each_model_sorted():
    kl = {"plain": [0.0, 2.0, 0.5], "free bits": [0.6, 0.7, 0.9]}
    fig = plot.kl_per_dimension(kl, threshold=0.1)
    plain_ax, free_ax = fig.axes
    heights = [bar.get_height() for bar in plain_ax.patches]
    np.testing.assert_allclose(heights, [2.0, 0.5, 0.0])  # largest first
    np.testing.assert_allclose([bar.get_height() for bar in free_ax.patches], [0.9, 0.7, 0.6])
    assert plain_ax.get_title() == "plain" and free_ax.get_title() == "free bits"
    np.testing.assert_allclose(plain_ax.lines[0].get_ydata(), [0.1, 0.1])
    assert len(plot.kl_per_dimension(kl, threshold=None).axes[0].lines) == 0
    with pytest.raises(ValueError, match=r"expected \[D\]"):
        plot.kl_per_dimension({"bad": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="NaN"):
        plot.kl_per_dimension({"bad": [0.1, np.nan]})
    with pytest.raises(ValueError, match="empty"):
        plot.kl_per_dimension({})
