"""p(x|z) as a small PixelCNN conditioned on z: the PixelVAE's decoder (Gulrajani et al. 2016).

The VAE's decoder still maps z to one number per pixel, ``[B, H, W, 1]``; this likelihood
gives that map to a gated PixelCNN (:class:`tfvae.pixelcnn.PixelCNN` with
``condition_channels=1``) as its condition, so that

    p(x|z) = prod_i Bernoulli(x_i | x_<i, z)     (raster order).

``log p(x|z)`` is one pass of the network over x (the pixels before each one are known);
a sample is ``H * W`` passes. Such a decoder can model the pixels well without z, so the
KL term is free to collapse (notebook 05 counts the dimensions in use; free bits is one
answer): the trade-off the PixelVAE makes.

Use: ``tfvae.VAE(encoder, decoder, latent_dim, likelihood=PixelCNNBernoulli(...))`` with
any decoder whose output is ``[B, H, W, 1]`` (e.g. ``tfvae.networks.mlp_decoder``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfvae.likelihoods import Likelihood
from tfvae.pixelcnn import PixelCNN
from tfvae.validation import check_count


@keras.saving.register_keras_serializable(package="tfvae")
class PixelCNNBernoulli(Likelihood):
    """Binary pixels from a PixelCNN conditioned on the decoder's output (module docstring).

    Args:
        filters, num_layers, kernel_size, first_kernel_size: the PixelCNN's
            (:class:`tfvae.pixelcnn.PixelCNN`); the defaults make a small one, as a decoder
            that leaves work for z.

    The PixelCNN's weights are this layer's: trained with the VAE, saved by ``model.save``.
    """

    support = (0.0, 1.0)

    def __init__(self, filters: int = 32, num_layers: int = 3, kernel_size: int = 3,
                 first_kernel_size: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_count(filters, "filters")
        self.num_layers = check_count(num_layers, "num_layers")
        self.kernel_size = kernel_size
        self.first_kernel_size = first_kernel_size
        self.network = None
        self._draw = None

    def build(self, data_shape):
        super().build(data_shape)
        if len(self.data_shape) != 3 or self.data_shape[2] != 1:
            raise ValueError(f"PixelCNNBernoulli models one binary channel, data shape "
                             f"(H, W, 1); got {self.data_shape}.")
        self.network = PixelCNN(self.data_shape, filters=self.filters,
                                num_layers=self.num_layers, kernel_size=self.kernel_size,
                                first_kernel_size=self.first_kernel_size, condition_channels=1,
                                name="pixelcnn")

    def distribution(self, params: tf.Tensor) -> AutoregressiveBernoulli:
        """p(x|z) for decoder outputs ``params`` ``[..., H, W, 1]`` (batch shape ``[...]``)."""
        return AutoregressiveBernoulli(self, tf.cast(params, tf.float32))

    def draw(self, uniforms: tf.Tensor, condition: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """:meth:`tfvae.pixelcnn.PixelCNN.draw` of the network, compiled once."""
        if self._draw is None:
            spec = tf.TensorSpec([None, *self.data_shape], tf.float32)
            self._draw = tf.function(self.network.draw, input_signature=[spec, spec])
        return self._draw(uniforms, condition)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, num_layers=self.num_layers,
                      kernel_size=self.kernel_size, first_kernel_size=self.first_kernel_size)
        return config


class AutoregressiveBernoulli:
    """p(x|z) = prod_i Bernoulli(x_i | x_<i, z) for a batch of conditions: what the VAE asks
    of a decoder distribution (``log_prob``, ``sample``, ``mean``).

    ``condition``: ``[..., H, W, 1]``, the decoder's output; batch shape ``[...]``, event
    shape ``[H, W, 1]``.
    """

    def __init__(self, likelihood: PixelCNNBernoulli, condition: tf.Tensor):
        self.likelihood = likelihood
        self.condition = condition
        self.event_shape = tf.TensorShape(likelihood.data_shape)
        self.batch_shape = condition.shape[:-3]

    def _flat(self, t: tf.Tensor) -> tf.Tensor:
        return tf.reshape(t, [-1, *self.likelihood.data_shape])

    def _unflat(self, t: tf.Tensor, event: bool) -> tf.Tensor:
        lead = tf.shape(self.condition)[:-3]
        shape = tf.concat([lead, self.likelihood.data_shape], 0) if event else lead
        return tf.reshape(t, shape)

    def log_prob(self, x) -> tf.Tensor:
        """log p(x|z) in nats, batch shape; ``x`` ``[..., H, W, 1]`` broadcasts against the
        condition (e.g. ``[B, ...]`` against ``K`` samples of z per image, ``[K, B, ...]``)."""
        x = tf.broadcast_to(tf.cast(x, tf.float32), tf.shape(self.condition))
        per_image = self.likelihood.network._log_prob(self._flat(x), self._flat(self.condition))
        return self._unflat(per_image, event=False)

    def _draw(self, uniforms: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        condition = self._flat(self.condition)
        x, p = self.likelihood.draw(self._flat(uniforms), condition)
        return self._unflat(x, event=True), self._unflat(p, event=True)

    def sample(self, seed=None) -> tf.Tensor:
        """One image per condition, ``[..., H, W, 1]`` of 0s and 1s, drawn pixel by pixel.
        ``seed``: a stateless seed (int32 ``[2]``), or ``None`` for fresh randomness."""
        shape = tf.shape(self.condition)
        uniforms = (tf.random.uniform(shape) if seed is None
                    else tf.random.stateless_uniform(shape, seed=seed))
        return self._draw(uniforms)[0]

    def mean(self) -> tf.Tensor:
        """The picture of p(x|z) that the VAE shows as its "mean": the probabilities
        p(x_i = 1 | x_<i, z) along the greedy draw (each pixel set to its more likely
        value). E[x|z] itself has no closed form for an autoregressive p(x|z)."""
        return self._draw(tf.fill(tf.shape(self.condition), 0.5))[1]
