"""Every kind of bad input gets a ValueError naming what was found and expected."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import small_vae

import tfvae


@pytest.fixture(scope="module")
def model():
    vae = small_vae()
    vae.compile()
    return vae


@pytest.fixture
def good():
    return (np.random.default_rng(0).random((8, 4, 4, 1)) < 0.5).astype(np.float32)


def _with(good, index, value):
    bad = good.copy()
    bad[index] = value
    return bad


BAD_INPUTS = {
    "shape": (lambda g: g.reshape(8, 16), r"shape \(\d+, 16\); expected \(batch, 4, 4, 1\)"),
    "rank": (lambda g: g[0], r"shape \(4, 4, 1\); expected \(batch, 4, 4, 1\)"),
    "dtype": (lambda g: (g * 255).astype(np.uint8), r"dtype uint8; expected a floating dtype"),
    "nan": (lambda g: _with(g, (0, 1, 1, 0), np.nan), r"1 non-finite value\(s\) \(NaN\)"),
    "inf": (lambda g: _with(g, (2, 0, 0, 0), np.inf), r"non-finite value\(s\) \(inf\)"),
    "range": (lambda g: g * 255,
              r"values in \[0, 255\]; the likelihood expects values in \[0, 1\]"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
@pytest.mark.parametrize("entry", ["fit", "evaluate", "encode", "reconstruct", "dataset"])
def test_bad_inputs_are_rejected_before_work(model, good, kind, entry):
    make_bad, message = BAD_INPUTS[kind]
    bad = make_bad(good)
    calls = {
        "fit": lambda: model.fit(bad, epochs=1, verbose=0),
        "evaluate": lambda: model.evaluate(bad, verbose=0),
        "encode": lambda: model.encode(bad),
        "reconstruct": lambda: model.reconstruct(bad),
        "dataset": lambda: model.fit(tf.data.Dataset.from_tensor_slices(bad).batch(4), verbose=0),
    }
    weights = [w.numpy().copy() for w in model.trainable_weights]
    with pytest.raises(ValueError, match=message):
        calls[entry]()
    for before, after in zip(weights, model.trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())  # nothing trained


def test_bad_validation_data_is_named(model, good):
    with pytest.raises(ValueError, match=r"validation_data contains 1 non-finite"):
        model.fit(good, validation_data=(_with(good, (0, 0, 0, 0), np.nan),), verbose=0)


def test_normal_likelihood_accepts_values_outside_unit_interval(good):
    vae = small_vae(likelihood="normal:0.5")
    vae.compile()
    vae.evaluate(good * 10 - 5, verbose=0)  # real-valued data: no range check


def test_unknown_names_and_mismatched_networks_are_explained():
    with pytest.raises(ValueError, match="Unknown kl 'exact'. Expected one of analytic, mc"):
        small_vae(kl="exact")
    with pytest.raises(ValueError, match="Unknown likelihood 'poisson'"):
        small_vae(likelihood="poisson")
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        small_vae(beta=-1.0)
    enc = tfvae.networks.mlp_encoder((4, 4, 1), 3)
    dec = tfvae.networks.mlp_decoder((4, 4, 1), 3)
    with pytest.raises(ValueError, match=r"encoder output shape is \(6,\); expected \(4,\)"):
        tfvae.VAE(enc, dec, latent_dim=2)
    other_dec = tfvae.networks.mlp_decoder((5, 5, 1), 3)
    with pytest.raises(ValueError, match=r"decoder maps \(3,\) to \(5, 5, 1\)"):
        tfvae.VAE(enc, other_dec, latent_dim=3)
