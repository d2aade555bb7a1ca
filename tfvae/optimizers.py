"""Adam with a fused update: tfvae's default optimizer.

``keras.optimizers.Adam`` updates each variable with about ten element-wise
TensorFlow ops (two moment updates, square root, division, ...), each a pass
over memory. Without XLA (Keras's choice on a CPU) those passes cost about as
much as the matrix products of a small MLP; TensorFlow's ``ResourceApplyAdam``
kernel does the same update in one pass (timings: ``benchmarks/README.md``,
``benchmarks/step_parts.py``).
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfvae")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (same arguments, same math, same variables)
    whose update of each float32 variable is one ``ResourceApplyAdam`` kernel.

    The update is Kingma & Ba's with Keras's epsilon placement::

        m <- m + (1 - beta_1) (g - m)
        v <- v + (1 - beta_2) (g^2 - v)
        w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

    Keras's own update runs instead with ``amsgrad=True``, under a
    ``tf.distribute`` strategy (where variables are mirrored), for sparse
    gradients and for variables that are not float32. Weight decay,
    clipping, EMA, learning-rate schedules, loss scaling and gradient
    accumulation are handled by Keras around ``update_step`` as for ``Adam``.
    A model saved with it loads with it, its moments and step count included.
    """

    def update_step(self, gradient, variable, learning_rate):
        fused = (not self.amsgrad
                 and not tf.distribute.has_strategy()
                 and not isinstance(gradient, tf.IndexedSlices)
                 and tf.as_dtype(variable.dtype) == tf.float32)
        if not fused:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.cast(self.beta_1, tf.float32)
        beta_2 = tf.cast(self.beta_2, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, tf.float32),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, tf.float32),
            grad=tf.cast(gradient, tf.float32),
        )


def _handle(variable) -> tf.Tensor:
    """The resource handle of a Keras or TensorFlow variable."""
    if isinstance(variable, keras.Variable):
        variable = variable.value  # the backing tf.Variable
    return variable.handle


def get_optimizer(identifier) -> keras.optimizers.Optimizer:
    """``keras.optimizers.get``, except that ``"adam"`` gives :class:`FusedAdam`."""
    if isinstance(identifier, str) and identifier.lower() == "adam":
        return FusedAdam()
    return keras.optimizers.get(identifier)
