"""Keras callbacks for VAE training."""

from __future__ import annotations

import keras


class KLWarmup(keras.callbacks.Callback):
    """Raise the KL weight beta linearly from 0 to ``target`` over ``steps``.

    Starting with a small KL weight lets the decoder learn to use z before the
    KL term pulls q(z|x) towards the prior (Bowman et al. 2016; Sønderby et al.
    2016), which helps against posterior collapse.

    Args:
        steps: number of training steps (batches) of the warm-up; must be > 0.
        target: final beta; default: the model's beta when training starts.

    Step ``i`` (the optimizer's step count before the update) uses
    ``beta = target * min(1, i / steps)``, computed inside the compiled
    training step, so the schedule is exact for any ``steps_per_execution``
    and a resumed run continues it where it stopped. ``model.beta`` holds the
    beta of the last step taken (it is updated after each execution of the
    training function) and is logged as ``beta`` at the end of each epoch.
    """

    def __init__(self, steps: int, target: float | None = None):
        super().__init__()
        if int(steps) <= 0:
            raise ValueError(f"KLWarmup steps must be a positive number of batches, got {steps}.")
        self.steps = int(steps)
        self.target = target

    def on_train_begin(self, logs=None):
        if self.target is None:
            self.target = float(keras.ops.convert_to_numpy(self.model.beta))
        self._set_schedule((self.steps, float(self.target)))
        self._set_beta(self._step())

    def on_train_batch_end(self, batch, logs=None):
        self._set_beta(self._step() - 1)

    def on_train_end(self, logs=None):
        self._set_schedule(None)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["beta"] = float(keras.ops.convert_to_numpy(self.model.beta))

    def _set_schedule(self, schedule):
        # The schedule is a constant of the traced training step: retrace it.
        self.model._kl_warmup = schedule
        self.model.make_train_function(force=True)

    def _step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _set_beta(self, step: int):
        self.model.beta.assign(self.target * min(1.0, max(step, 0) / self.steps))
