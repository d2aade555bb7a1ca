"""LearningRateDecay (TrainConfig.final_learning_rate) against Keras's own LearningRateScheduler,
by epochs and by a time budget, resumed, and through tfvae.train."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from helpers import random_binary

import tfvae
from tfvae import training
from tfvae.callbacks import LearningRateDecay, TimeBudget

DATA_SHAPE = (4, 4, 1)
INITIAL, FINAL, EPOCHS = 0.05, 0.0005, 4


def _data(n=32):
    return random_binary(n, DATA_SHAPE)


def _fit(callback, epochs=EPOCHS, initial_epoch=0, model=None):
    """A tiny VAE trained with FusedAdam (tfvae's default), 8 steps per epoch, 4 per execution;
    the same weights, noise and data order in every call."""
    if model is None:
        keras.utils.set_random_seed(0)
        encoder, decoder = tfvae.networks.build_networks("mlp", DATA_SHAPE, 3, hidden_units=(8,))
        model = tfvae.VAE(encoder, decoder, 3, seed=0)
        model.compile(optimizer=tfvae.FusedAdam(INITIAL), steps_per_execution=4)
    history = model.fit(_data(), batch_size=4, epochs=epochs, initial_epoch=initial_epoch,
                        shuffle=False, verbose=0, callbacks=[callback])
    return model, history.history


def _closed_form(epoch: int) -> float:
    return INITIAL * (FINAL / INITIAL) ** (epoch / EPOCHS)


def test_the_steps_use_the_decayed_rate_of_each_epoch():
    model, history = _fit(LearningRateDecay(INITIAL, FINAL, EPOCHS))
    reference, _ = _fit(keras.callbacks.LearningRateScheduler(lambda epoch: _closed_form(epoch)))
    for w, w_ref in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["learning_rate"], [_closed_form(e) for e in range(4)],
                               rtol=1e-6)
    constant, _ = _fit(keras.callbacks.History())  # the comparison above can fail
    assert max(np.abs(w - r).max()
               for w, r in zip(constant.get_weights(), reference.get_weights())) > 1e-3


def test_a_resumed_fit_continues_the_schedule():
    model, _ = _fit(LearningRateDecay(INITIAL, FINAL, EPOCHS), epochs=2)
    _, history = _fit(LearningRateDecay(INITIAL, FINAL, EPOCHS), initial_epoch=2, model=model)
    np.testing.assert_allclose(history["learning_rate"], [_closed_form(2), _closed_form(3)],
                               rtol=1e-6)


def test_with_a_time_budget_the_progress_is_the_fraction_of_its_minutes():
    budget = TimeBudget(minutes=10.0, minutes_before=5.0)  # half spent in earlier sessions
    decay = LearningRateDecay(INITIAL, FINAL, epochs=1000, budget=budget)
    budget.on_train_begin()
    assert decay.progress(epoch=0) == pytest.approx(0.5, abs=1e-3)
    assert decay.rate(0.5) == pytest.approx(np.sqrt(INITIAL * FINAL))
    assert LearningRateDecay(INITIAL, FINAL, 1000, TimeBudget(10.0, 25.0)).progress(0) == 1.0
    assert LearningRateDecay(INITIAL, FINAL, 1000, TimeBudget(None)).progress(250) == 0.25


@pytest.mark.parametrize("bad", [dict(initial=0.0), dict(final=-1e-3), dict(final=float("nan")),
                                 dict(epochs=0)])
def test_bad_settings_are_refused(bad):
    settings = dict(initial=1e-3, final=1e-4, epochs=10) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        LearningRateDecay(**settings)
    if "final" in bad:
        with pytest.raises(ValueError, match="final_learning_rate"):
            tfvae.TrainConfig(final_learning_rate=bad["final"])


def test_train_decays_the_step_size_over_the_epochs(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    split = {name: (rng.random((n, 4, 4, 1)) < 0.3).astype(np.float32)
             for name, n in (("train", 64), ("valid", 16), ("test", 16))}
    monkeypatch.setattr(training, "load_data", lambda config: dict(split))
    config = tfvae.TrainConfig(epochs=3, batch_size=16, latent_dim=2, hidden_units=(8,),
                               learning_rate=1e-2, final_learning_rate=1e-3)
    tfvae.train(config, tmp_path / "run", verbose=0)
    rates = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]["learning_rate"]
    np.testing.assert_allclose(rates, [1e-2, 1e-2 * 0.1 ** (1 / 3), 1e-2 * 0.1 ** (2 / 3)],
                               rtol=1e-6)
