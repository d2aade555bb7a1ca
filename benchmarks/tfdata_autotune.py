"""Does tf.data's autotuner slow training down on this machine?

Trains the MLP VAE 784-400-20 (batch 128) on 12,800 random binary images in
one ``tf.function`` per pass (a ``tf.range`` loop over the iterator, as
``fit`` with ``steps_per_execution > 1`` does), fed by the same in-memory
pipeline (``cache, shuffle, batch, prefetch``) with the autotuner on
(``prefetch(AUTOTUNE)``, tf.data's default) and off (``prefetch(2)``, what
:func:`tfvae.datasets.make_dataset` does). Prints thousands of examples per
second for each of ``--passes`` passes after a warm-up pass.

On 2 CPU cores (benchmarks/README.md) some passes with the autotuner on ran
at half speed: every step waited ~6 ms longer. Run it in several processes
(the slow passes come and go)::

    for i in 1 2 3; do python benchmarks/tfdata_autotune.py; done
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import tfvae

BATCH, EXAMPLES = 128, 12_800


def pipelines(x: np.ndarray) -> dict[str, tf.data.Dataset]:
    base = tf.data.Dataset.from_tensor_slices(x).cache().shuffle(len(x), seed=0).batch(BATCH)
    off = tf.data.Options()
    off.autotune.enabled = False
    return {"autotuner on": base.prefetch(tf.data.AUTOTUNE),
            "autotuner off": base.prefetch(2).with_options(off)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--passes", type=int, default=6, help="timed passes per pipeline")
    args = p.parse_args(argv)
    x = (np.random.default_rng(0).random((EXAMPLES, 28, 28, 1)) < 0.3).astype(np.float32)
    keras.utils.set_random_seed(0)
    vae = tfvae.VAE(*tfvae.networks.build_networks("mlp", (28, 28, 1), 20, (400,)), 20, seed=0)
    optimizer = keras.optimizers.Adam(1e-3)
    variables = vae.trainable_variables
    optimizer.build(variables)

    @tf.function
    def run_pass(iterator, steps):
        for _ in tf.range(steps):
            batch = next(iterator)
            with tf.GradientTape() as tape:
                reconstruction, kl = vae.elbo_terms(batch, training=True)
                loss = tf.reduce_mean(reconstruction + kl)
            optimizer.apply(tape.gradient(loss, variables), variables)

    steps = tf.constant(EXAMPLES // BATCH)
    for name, data in pipelines(x).items():
        run_pass(iter(data), steps)  # trace and warm up
        rates = []
        for _ in range(args.passes):
            start = time.perf_counter()
            run_pass(iter(data), steps)
            rates.append(EXAMPLES / (time.perf_counter() - start) / 1000)
        print(f"{name}: " + ", ".join(f"{r:.1f}" for r in rates) + " thousand examples/s",
              flush=True)


if __name__ == "__main__":
    main()
