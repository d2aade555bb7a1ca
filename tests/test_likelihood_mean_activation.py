"""Normal likelihood with a sigmoid mean (Kingma & Welling's Frey Face decoder)."""

import keras
import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm

import tfvae
from tests.helpers import small_vae
from tfvae.likelihoods import get_likelihood

SHAPE = (4, 4, 1)


def _params_and_data(seed=0):
    rng = np.random.default_rng(seed)
    params = (3 * rng.normal(size=(5, *SHAPE))).astype(np.float32)
    return params, rng.random((5, *SHAPE)).astype(np.float32)


@pytest.mark.parametrize("scale", [0.3, "learned"])
def test_log_prob_is_a_normal_density_around_sigmoid_of_the_decoder_output(scale):
    params, x = _params_and_data()
    likelihood = tfvae.Normal(scale=scale, init_scale=0.2, mean="sigmoid")
    likelihood.build(SHAPE)
    sigma = 0.3 if scale == 0.3 else 0.2
    want = norm.logpdf(x.astype(np.float64), loc=expit(params.astype(np.float64)), scale=sigma)
    got = likelihood.distribution(params)
    np.testing.assert_allclose(got.log_prob(x).numpy(), want.sum(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(likelihood.mean_image(params).numpy(), expit(params), rtol=1e-6)
    # The default keeps the decoder output as the mean.
    identity = tfvae.Normal(scale=0.3)
    identity.build(SHAPE)
    np.testing.assert_allclose(identity.mean_image(params).numpy(), params)


def test_names_give_the_sigmoid_mean_and_bad_means_are_rejected():
    assert get_likelihood("normal_sigmoid").mean == "sigmoid"
    assert get_likelihood("normal_sigmoid").learned
    fixed = get_likelihood("normal_sigmoid:0.1")
    assert (fixed.mean, fixed.scale) == ("sigmoid", 0.1)
    assert get_likelihood("normal:0.1").mean == "identity"
    assert get_likelihood("normal").mean == "identity"
    for bad in ("normal_sigmoid:-1", "normal_sigmoid:", "normal_tanh:0.1"):
        with pytest.raises(ValueError, match="normal_sigmoid:<scale>"):
            get_likelihood(bad)
    with pytest.raises(ValueError, match="identity, sigmoid"):
        tfvae.Normal(mean="tanh")


@pytest.mark.parametrize("likelihood", ["normal_sigmoid", "normal_sigmoid:0.2"])
def test_save_and_load_keep_the_sigmoid_mean(tmp_path, likelihood):
    model = small_vae(SHAPE, likelihood=likelihood, seed=0)
    model.compile()
    x = np.random.default_rng(1).random((8, *SHAPE)).astype(np.float32)
    model.fit(x, epochs=1, batch_size=4, verbose=0)
    z = np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32)
    path = tmp_path / "vae.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.likelihood.mean == "sigmoid"
    assert loaded.likelihood.get_config()["mean"] == "sigmoid"
    np.testing.assert_allclose(loaded.decode(z).log_prob(x).numpy(),
                               model.decode(z).log_prob(x).numpy(), rtol=1e-6)
    means = loaded.decode(z).mean().numpy()
    assert means.min() > 0 and means.max() < 1
