"""tfvae's compile defaults (XLA, steps per execution) and what depends on them.

The defaults come from ``benchmarks/train_speed.py``; these tests check that
they are applied, that explicit arguments win, that they survive save/load as
"defaults" (not as frozen values), and that batch-level behaviour (KL warm-up,
progress bar) stays right when several steps run per execution.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import random_binary

import tfvae
from tfvae.model import DEFAULT_STEPS_PER_EXECUTION

DATA_SHAPE = (4, 4, 1)
LATENT = 3


def _data(n=32):
    return random_binary(n, DATA_SHAPE)


def _vae(beta=1.0, **kwargs) -> tfvae.VAE:
    keras.utils.set_random_seed(0)
    encoder, decoder = tfvae.networks.build_networks("mlp", DATA_SHAPE, LATENT,
                                                     hidden_units=(8,))
    return tfvae.VAE(encoder, decoder, LATENT, beta=beta, seed=0, **kwargs)


def _expected_default_jit() -> bool:
    # What keras.Model's own "auto" picks: XLA only with an accelerator.
    return bool([d for d in tf.config.list_physical_devices() if d.device_type != "CPU"])


def test_defaults_are_applied():
    model = _vae()
    model.compile()
    assert DEFAULT_STEPS_PER_EXECUTION > 1
    assert model.steps_per_execution == DEFAULT_STEPS_PER_EXECUTION
    assert model.jit_compile is _expected_default_jit()


@pytest.mark.parametrize("jit, spe", [(True, 1), (False, 7), (True, 3)])
def test_explicit_arguments_win(jit, spe):
    model = _vae()
    model.compile(optimizer="sgd", jit_compile=jit, steps_per_execution=spe)
    assert model.jit_compile is jit
    assert model.steps_per_execution == spe
    history = model.fit(_data(), batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_run_eagerly_gets_one_step_and_no_xla():
    model = _vae()
    model.compile(run_eagerly=True)
    assert model.steps_per_execution == 1
    assert model.jit_compile is False


@pytest.mark.parametrize("kw, found", [
    ({"steps_per_execution": 0}, "got 0"),
    ({"steps_per_execution": 2.5}, "got 2.5"),
    ({"steps_per_execution": True}, "got True"),
    ({"jit_compile": "yes"}, "got 'yes'"),
])
def test_bad_compile_arguments_are_refused(kw, found):
    with pytest.raises(ValueError, match=found):
        _vae().compile(**kw)


def test_save_keeps_defaults_as_defaults_and_explicit_values_as_given(tmp_path):
    x = _data()
    default = _vae()
    default.compile()
    default.fit(x, batch_size=8, epochs=1, verbose=0)
    default.save(tmp_path / "default.keras")
    loaded = keras.models.load_model(tmp_path / "default.keras")
    assert loaded.get_compile_config()["steps_per_execution"] == "auto"
    assert loaded.steps_per_execution == DEFAULT_STEPS_PER_EXECUTION
    assert loaded.jit_compile is _expected_default_jit()

    explicit = _vae()
    explicit.compile(jit_compile=False, steps_per_execution=3)
    explicit.fit(x, batch_size=8, epochs=1, verbose=0)
    explicit.save(tmp_path / "explicit.keras")
    loaded = keras.models.load_model(tmp_path / "explicit.keras")
    assert loaded.steps_per_execution == 3 and loaded.jit_compile is False
    assert np.isfinite(loaded.fit(x, batch_size=8, epochs=1, verbose=0).history["loss"]).all()


class _PerBatchBeta(keras.callbacks.Callback):
    """Reference schedule: beta = target * min(1, i / steps) set before step i
    from the host, which is exact only with one step per execution."""

    def __init__(self, steps, target):
        super().__init__()
        self.steps, self.target = steps, target

    def on_train_batch_begin(self, batch, logs=None):
        i = int(self.model.optimizer.iterations.numpy())
        self.model.beta.assign(self.target * min(1.0, i / self.steps))


def _warmup_fit(spe, callback, epochs=2):
    model = _vae(beta=2.0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False,
                  steps_per_execution=spe)
    history = model.fit(_data(), batch_size=4, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[callback])
    return model, history.history


def test_kl_warmup_is_exact_per_step_with_many_steps_per_execution():
    # 8 steps per epoch, 4 per execution, warm-up over 6 steps: beta changes
    # inside an execution. Same noise and data order in both runs, so the
    # weights agree only if every step used the reference beta.
    reference, ref_history = _warmup_fit(1, _PerBatchBeta(6, 2.0))
    model, history = _warmup_fit(4, tfvae.KLWarmup(6))
    for w, w_ref in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=1e-5)
    assert history["beta"] == [2.0, 2.0]
    # A schedule constant within each execution (beta set only every 4 steps)
    # gives other weights: the comparison above can fail.
    coarse, _ = _warmup_fit(4, _PerBatchBeta(6, 2.0))
    assert max(np.abs(w - r).max()
               for w, r in zip(coarse.get_weights(), reference.get_weights())) > 1e-3


def test_kl_warmup_is_part_of_the_model_and_later_fits_continue_it(tmp_path):
    model, history = _warmup_fit(32, tfvae.KLWarmup(20), epochs=1)  # 8 of 20 steps
    # The KL weight of the next step (step index 8); beta stays the target.
    assert float(model.kl_weight()) == pytest.approx(2.0 * 8 / 20)
    assert history["beta"] == [pytest.approx(2.0 * 8 / 20)]
    assert float(model.beta.numpy()) == 2.0 and model.kl_warmup_steps == 20
    # A later fit, without the callback, continues the schedule where it was.
    model.fit(_data(), batch_size=4, epochs=1, verbose=0)
    assert float(model.kl_weight()) == pytest.approx(2.0 * 16 / 20)
    # It is saved with the model: the loaded model continues it too.
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.kl_warmup_steps == 20
    assert float(loaded.kl_weight()) == pytest.approx(2.0 * 16 / 20)
    # With beta = 0 the loss is the reconstruction term alone.
    model.beta.assign(0.0)
    later = model.fit(_data(), batch_size=4, epochs=1, verbose=0).history
    assert later["kl"][0] > 0.01
    assert later["loss"][0] == pytest.approx(later["reconstruction"][0], rel=1e-6)


def test_warmup_as_a_model_option_equals_the_callback():
    by_option = _vae(beta=2.0, kl_warmup_steps=6)
    by_option.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False,
                      steps_per_execution=4)
    by_option.fit(_data(), batch_size=4, epochs=2, shuffle=False, verbose=0)
    by_callback, _ = _warmup_fit(4, tfvae.KLWarmup(6))
    for a, b in zip(by_option.get_weights(), by_callback.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_progress_bar_reaches_the_last_step(capsys):
    model = _vae()
    model.compile(steps_per_execution=3)
    model.fit(_data(), batch_size=4, epochs=1, verbose=1)  # 8 steps: 3 + 3 + 2
    assert "8/8" in capsys.readouterr().out
