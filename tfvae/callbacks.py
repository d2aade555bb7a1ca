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

    Beta is set before each step from the optimizer's step count, so a resumed
    run continues the schedule where it stopped.
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
        self._set_beta()

    def on_train_batch_begin(self, batch, logs=None):
        self._set_beta()

    def _set_beta(self):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.model.beta.assign(self.target * min(1.0, step / self.steps))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["beta"] = float(keras.ops.convert_to_numpy(self.model.beta))
