"""Models saved by tfvae 0.1.0 (before the architecture change) still load and compute the same."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import tfvae
from tfvae import checkpoints

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "vae_v0_1_expected.json").read_text())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


@pytest.mark.skipif(_version(keras.__version__) < _version(EXPECTED["keras"]),
                    reason=f"the fixtures were written by Keras {EXPECTED['keras']}, and an older "
                           f"Keras cannot read a newer one's layer configs")
@pytest.mark.parametrize("likelihood", ["bernoulli", "normal"])
def test_a_model_saved_before_the_change_loads_and_gives_the_same_numbers(likelihood):
    expected = EXPECTED["models"][likelihood]
    model = checkpoints.load_model(FIXTURES / f"vae_v0_1_{likelihood}.keras")
    assert isinstance(model, tfvae.VAE)
    assert model.latent_dim == 2 and model.data_shape == (6, 4, 1)
    assert float(model.beta) == expected["beta"]
    assert int(model.optimizer.iterations) == expected["iterations"]
    q = model.encode(np.array(expected["x"], np.float32))
    np.testing.assert_allclose(q.mean(), expected["q_mean"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(q.stddev(), expected["q_stddev"], rtol=1e-6, atol=1e-6)
    decoded = model.decode(np.array(expected["z"], np.float32)).mean()
    np.testing.assert_allclose(decoded, expected["decoded_mean"], rtol=1e-6, atol=1e-6)
