"""tfvae.pixelcnn against independent references: causality by autodiff, NumPy
log-likelihoods, a pixel-by-pixel sampling loop in Python; training, saving, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvae.datasets import make_dataset
from tfvae.optimizers import FusedAdam
from tfvae.pixelcnn import PixelCNN, receptive_field, rows_reached


def small_pixelcnn(image_shape=(8, 8, 1), init_seed=0, **kwargs) -> PixelCNN:
    keras.utils.set_random_seed(init_seed)
    kwargs = {"filters": 8, "num_layers": 2, "first_kernel_size": 3, **kwargs}
    return PixelCNN(image_shape, **kwargs)


def binary(shape, p=0.4, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


def expected_dependencies(height: int, width: int, reach: int, rows_up: int) -> np.ndarray:
    """``[H*W, H*W]`` booleans: may logit i depend on pixel j? From the geometry
    alone: the ``rows_up`` rows above i (columns within ``reach``), and the
    ``reach`` pixels left of i in its row."""
    rows, cols = np.divmod(np.arange(height * width), width)
    r_i, c_i = rows[:, None], cols[:, None]
    r_j, c_j = rows[None, :], cols[None, :]
    above = (r_j <= r_i - 1) & (r_j >= r_i - 1 - rows_up) & (np.abs(c_j - c_i) <= reach)
    left = (r_j == r_i) & (c_j < c_i) & (c_j >= c_i - reach)
    return above | left


@pytest.mark.parametrize("image_shape, layers, kernel, first, dilations", [
    ((8, 8), 2, 3, 3, None),    # reach 2: a small window, checked exactly
    ((6, 9), 3, 3, 5, None),    # reach 4, not square: rows and columns cannot be swapped
    ((8, 8), 4, 5, 7, None),    # reach 9 > image: every earlier pixel, no blind spot
    ((12, 9), 3, 3, 3, (1, 2, 3)),  # rows up 1 + 2 + 3 = 6, columns 3: dilated, no gaps
    ((16, 7), 4, 3, 3, (1, 2, 4, 8)),  # rows up 15 >= 16 - 1: all rows above, columns 3
])
def test_logits_depend_on_exactly_the_earlier_pixels_in_reach(image_shape, layers, kernel,
                                                              first, dilations):
    # Wide layers: every ReLU/gate path is alive somewhere, so no true
    # dependency has an exactly zero gradient by chance.
    model = small_pixelcnn(image_shape, filters=32, num_layers=layers, kernel_size=kernel,
                           first_kernel_size=first, vertical_dilations=dilations)
    rng = np.random.default_rng(1)
    for layer in model.layers:  # non-zero biases: with zero ones an all-zero input row
        layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape))  # sits on ReLU's kink at 0
    height, width = image_shape
    x = tf.constant(binary((1, height, width, 1)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x)
    jacobian = tape.jacobian(logits, x).numpy().reshape(height * width, height * width)
    found = jacobian != 0

    reach = receptive_field(layers, kernel, first)
    rows_up = rows_reached(layers, kernel, first, dilations)
    expected = expected_dependencies(height, width, reach, rows_up)
    raster_earlier = np.tril(np.ones((height * width,) * 2, bool), k=-1)
    assert not (found & ~raster_earlier).any(), "a logit depends on its own or a later pixel"
    np.testing.assert_array_equal(found, expected)
    if reach >= max(height, width):
        np.testing.assert_array_equal(found, raster_earlier)  # no blind spot


def test_log_prob_is_the_bernoulli_log_likelihood_of_the_logits():
    model = small_pixelcnn()
    x = binary((5, 8, 8, 1), seed=1)
    logits = model(x).numpy().astype(np.float64)
    p = 1 / (1 + np.exp(-logits))
    expected = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(model.log_prob(x), expected, rtol=1e-5)
    np.testing.assert_allclose(model.log_prob(x, batch_size=2), expected, rtol=1e-5)
    assert model.log_prob(x).dtype == np.float64 and model.log_prob(x).shape == (5,)


def test_log_prob_with_large_logits():
    model = small_pixelcnn()
    kernel = model.to_logits.kernel
    kernel.assign(kernel * 300.0)  # logits of tens: log(sigmoid) underflows if done naively
    x = binary((4, 8, 8, 1), seed=2)
    logits = model(x).numpy().astype(np.float64)
    assert np.abs(logits).max() > 30
    expected = (x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits)).sum((1, 2, 3))
    np.testing.assert_allclose(model.log_prob(x), expected, rtol=1e-5)


def reference_sample(model: PixelCNN, uniforms: np.ndarray) -> np.ndarray:
    """Pixel by pixel in Python: the full model on the whole image at every step."""
    n, height, width, _ = uniforms.shape
    x = np.zeros(uniforms.shape, np.float32)
    for i in range(height):
        for j in range(width):
            logit = model(x).numpy()[:, i, j, 0].astype(np.float64)
            x[:, i, j, 0] = uniforms[:, i, j, 0] < 1 / (1 + np.exp(-logit))
    return x


@pytest.mark.parametrize("dilations", [None, (1, 2)])
def test_sample_is_the_autoregressive_draw_and_reproducible(dilations):
    # The sampler feeds only the rows up to the current one: with dilated
    # vertical kernels too, that must give the full image's logits.
    model = small_pixelcnn((5, 6, 1), init_seed=3, vertical_dilations=dilations)
    kernel = model.to_logits.kernel
    kernel.assign(kernel * 4.0)  # logits far from 0: each pixel depends strongly on earlier ones
    images = model.sample(4, seed=7).numpy()
    assert images.shape == (4, 5, 6, 1) and images.dtype == np.float32
    assert set(np.unique(images)) <= {0.0, 1.0}
    np.testing.assert_array_equal(images, reference_sample(model, model.sampling_noise(4, 7)
                                                           .numpy()))
    np.testing.assert_array_equal(model.sample(4, seed=7).numpy(), images)
    assert not np.array_equal(model.sample(4, seed=8).numpy(), images)
    # The model's own seed when none is given.
    seeded = small_pixelcnn((5, 6, 1), init_seed=3, seed=11)
    np.testing.assert_array_equal(seeded.sample(3).numpy(), seeded.sample(3).numpy())
    np.testing.assert_array_equal(seeded.sample(3).numpy(), seeded.sample(3, seed=11).numpy())


def test_training_on_patterns_lowers_the_nll():
    # Four fixed 8x8 patterns: the best model has NLL log 4 = 1.39 nats.
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:8, 0:8]
    patterns = np.stack([rows % 2, cols % 2, (rows + cols) % 2, rows < 4]).astype(np.float32)
    x = patterns[rng.integers(0, 4, 128)][..., None]
    model = small_pixelcnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    before = model.evaluate(x, batch_size=128, verbose=0, return_dict=True)
    history = model.fit(x, batch_size=32, epochs=3, verbose=0).history
    after = model.evaluate(x, batch_size=128, verbose=0, return_dict=True)
    assert before["nll"] > 40  # about 64 log 2 = 44 at the start
    assert after["nll"] < 0.4 * before["nll"]
    assert history["nll"][-1] < history["nll"][0]
    np.testing.assert_allclose(after["nll"], -model.log_prob(x).mean(), rtol=1e-4)
    np.testing.assert_allclose(after["loss"], after["nll"], rtol=1e-6)


def test_save_and_load_keep_log_prob_and_optimizer(tmp_path):
    model = small_pixelcnn(kernel_size=5, head_units=12, seed=4, vertical_dilations=(1, 2))
    model.compile()
    x = binary((32, 8, 8, 1), seed=5)
    model.fit(x, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "pixelcnn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, PixelCNN)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded.log_prob(x), model.log_prob(x), rtol=1e-6)
    assert isinstance(loaded.optimizer, FusedAdam)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(saved))


@pytest.mark.parametrize("bad, message", [
    (np.full((4, 8, 8, 1), 0.5, np.float32), "strictly between 0 and 1"),
    (binary((4, 8, 8, 1)).reshape(4, 64), r"shape \(4, 64\); expected \(batch, 8, 8, 1\)"),
    (np.where(binary((4, 8, 8, 1)) > 0, np.nan, 0).astype(np.float32), "non-finite"),
    (binary((4, 8, 8, 1)) * 2, r"values in \[0, 2\]"),
    (binary((4, 8, 8, 1)).astype(np.uint8), "dtype uint8"),
])
def test_bad_input_is_refused_before_any_work(bad, message):
    model = small_pixelcnn()
    model.compile()
    for call in (lambda: model.fit(bad, epochs=1, verbose=0),
                 lambda: model.evaluate(bad, verbose=0), lambda: model.log_prob(bad),
                 lambda: model.logits(bad)):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("value, message", [
    (0.5, "training step 2 has 64 value.s. strictly between 0 and 1"),
    (np.nan, "training step 2 has 64 value.s. that are NaN"),
])
def test_a_bad_later_batch_stops_fit_with_a_clear_error(value, message):
    model = small_pixelcnn()
    model.compile()
    x = binary((2, 8, 8, 1))
    x[1] = value  # the first batch, which is checked before fit, is good
    with pytest.raises(ValueError, match=message):
        model.fit(make_dataset(x, batch_size=1, shuffle=False), epochs=1, shuffle=False,
                  verbose=0)


def test_constructor_checks_and_config_round_trip():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        PixelCNN((8, 8), kernel_size=4)
    with pytest.raises(ValueError, match="one binary channel"):
        PixelCNN((8, 8, 3))
    with pytest.raises(ValueError, match="filters must be an integer >= 1"):
        PixelCNN((8, 8), filters=0)
    with pytest.raises(ValueError, match="do not pass loss"):
        small_pixelcnn().compile(loss="mse")
    model = small_pixelcnn((6, 7))
    assert model.image_shape == (6, 7, 1)
    tiny = PixelCNN((2, 3), filters=4, num_layers=2)  # smaller than its 7-wide first kernel
    assert tiny.sample(2, seed=0).shape == (2, 2, 3, 1)
    assert tiny.log_prob(binary((2, 2, 3, 1))).shape == (2,)
    clone = PixelCNN.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()
    dilated = small_pixelcnn(num_layers=3, vertical_dilations=(1, 2, 2))
    assert PixelCNN.from_config(dilated.get_config()).vertical_dilations == (1, 2, 2)
    with pytest.raises(ValueError, match="one dilation per layer \\(3\\), got 2"):
        small_pixelcnn(num_layers=3, vertical_dilations=(1, 2))
    # First kernel 3 reaches 1 row up, so a dilation of 3 in layer 1 would skip row 2.
    with pytest.raises(ValueError, match="vertical_dilations\\[1\\] = 3 would leave rows "
                                         "unseen.*at most 2"):
        small_pixelcnn(num_layers=3, vertical_dilations=(1, 3, 1))
    with pytest.raises(ValueError, match="vertical_dilations"):
        small_pixelcnn(num_layers=2, vertical_dilations=(1, 0))
    with pytest.raises(ValueError, match="sequence of 2 integers >= 1, one per layer, got 2"):
        small_pixelcnn(num_layers=2, vertical_dilations=2)
