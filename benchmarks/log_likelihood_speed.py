"""Speed of ``VAE.log_likelihood`` against the machine's FLOP floor.

The model is the Burda et al. MLP (784-200-200-50, tanh; the reference run of
``burda_nll.py``) with freshly initialised weights (speed does not depend on
them), on 100 binarised MNIST test images (random binary images where the
dataset is absent), with K importance samples each (5000 by default).

The floor is the estimate's floating-point work (the encoder once per image,
the decoder once per sample, the log-probabilities; ``flops``) divided by
the rate of a 2048x2048 float32 matrix product measured in the same round.
Rows, timed in interleaved rounds (median over rounds):

- ``before``: the previous implementation, reproduced by patching: TFP's
  ``q.sample`` (stateless normal, default algorithm) and 2**24-value chunks;
- ``default``: ``log_likelihood`` as it ships (Philox draws, 2**22-value chunks);
- ``chunk N``: the same with ``samples_per_chunk=N``.

Each row gives wall seconds, process CPU seconds (less sensitive to other
work on a shared machine), both as multiples of the floor, and the mean
estimate with its standard error: the rows draw different noise, so they
agree within Monte-Carlo error (``tests/test_importance.py`` checks the
compiled path against a NumPy computation on the same draws to float32
round-off).

Usage::

    python benchmarks/log_likelihood_speed.py --rounds 3          # ~3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import tensorflow as tf
from hour_runs import paired_difference  # this folder is on sys.path when run as a script

import tfvae
from tfvae import importance

SHAPE, LATENT, HIDDEN = (28, 28, 1), 50, (200, 200)
PIXELS = math.prod(SHAPE)
BEFORE_CHUNK_VALUES = 2**24


def burda_model(prior="standard_normal") -> tfvae.VAE:
    """The Burda et al. MLP VAE with weights from seed 0 (every call: the same weights)."""
    keras.utils.set_random_seed(0)
    encoder = tfvae.networks.mlp_encoder(SHAPE, LATENT, HIDDEN, activation="tanh")
    decoder = tfvae.networks.mlp_decoder(SHAPE, LATENT, HIDDEN, activation="tanh")
    return tfvae.VAE(encoder, decoder, LATENT, prior=prior)


def test_images(n: int) -> tuple[np.ndarray, str]:
    try:
        x, _ = tfvae.datasets.load("mnist", "test")
        x = (x[:n] > 0.5).astype(np.float32)
        return x, f"the first {n} MNIST test images, thresholded at 0.5"
    except Exception as error:  # no dataset here: the timing does not depend on the pixels
        print(f"(MNIST not available: {error}; timing on random binary images)")
        rng = np.random.default_rng(0)
        return (rng.random((n, *SHAPE)) < 0.13).astype(np.float32), f"{n} random binary images"


def dense_flops(network: keras.Model) -> int:
    """Multiply-adds of one example through the Dense layers, as FLOPs (2 per)."""
    return sum(2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
               for layer in network.layers if isinstance(layer, keras.layers.Dense))


def flops(model: tfvae.VAE, images: int, k: int) -> int:
    """Floating-point work of log p(x) for ``images`` examples with K samples.

    Encoder once per image; per sample: the decoder, z = loc + scale*eps
    (2 per latent value), log q and log p(z) (about 4 each per latent value)
    and the Bernoulli log-probability (x*l - softplus(l) as relu, abs, exp,
    log1p, multiply, subtract and the sum: 7 per pixel).
    """
    per_sample = dense_flops(model.decoder) + 10 * LATENT + 7 * PIXELS
    return images * (dense_flops(model.encoder) + k * per_sample)


def timed(run) -> tuple:
    """``run()``'s result, wall seconds, process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    values = run()
    return values, time.perf_counter() - wall, time.process_time() - cpu


def time_rounds(rows: dict, rounds: int, each_round=lambda: None) -> tuple[dict, dict, dict]:
    """Run every row once untimed (which compiles it), then ``rounds`` rounds that time
    each row in turn (``each_round()`` first in each): wall seconds per row [rounds],
    CPU seconds per row [rounds], each row's values from its last run."""
    for run in rows.values():
        run()
    wall = {name: [] for name in rows}
    cpu = {name: [] for name in rows}
    values = {}
    for r in range(rounds):
        each_round()
        for name, run in rows.items():
            values[name], seconds, cpu_seconds = timed(run)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
            print(f"round {r + 1}: {name}: {seconds:.2f} s wall, {cpu_seconds:.2f} s CPU",
                  flush=True)
    return wall, cpu, values


def matmul_rate(repeats: int = 5) -> tuple[float, float]:
    """FLOP per wall second and per process CPU second of a 2048x2048 float32
    matrix product (``repeats`` products after a warm-up)."""
    a = tf.random.normal([2048, 2048])
    b = tf.random.normal([2048, 2048])
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    product()
    _, wall, cpu = timed(lambda: [product().numpy() for _ in range(repeats)])
    return 2 * 2048**3 * repeats / wall, 2 * 2048**3 * repeats / cpu


def runners(x: np.ndarray, k: int, chunks: list[int]) -> dict:
    model, old_model = burda_model(), burda_model()  # the same weights

    def estimate(**kwargs):
        return lambda: model.log_likelihood(x, num_samples=k, batch_size=len(x), seed=0,
                                            verbose=0, **kwargs)

    def before():
        # The previous implementation: TFP's own sampler inside the compiled
        # chunk (old_model keeps its own compiled function, traced under the patch).
        with mock.patch.object(importance, "sample_posterior",
                               lambda q, n, seed: q.sample(n, seed=seed)):
            spc = max(1, BEFORE_CHUNK_VALUES // (len(x) * PIXELS))
            return old_model.log_likelihood(x, num_samples=k, batch_size=len(x), seed=0,
                                            verbose=0, samples_per_chunk=spc)

    rows = {"before": before, "default": estimate()}
    rows.update({f"chunk {n}": estimate(samples_per_chunk=n) for n in chunks})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--k", type=int, default=5000, help="importance samples per image")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--chunks", type=int, nargs="*", default=[13, 26, 107, 214],
                   help="samples_per_chunk values to time besides the default")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    x, data = test_images(args.images)
    work = flops(burda_model(), len(x), args.k)
    rows = runners(x, args.k, args.chunks)
    floor_wall, floor_cpu = [], []

    def measure_floor():
        rate, rate_cpu = matmul_rate()
        floor_wall.append(work / rate)
        floor_cpu.append(work / rate_cpu)

    wall, cpu, values = time_rounds(rows, args.rounds, measure_floor)

    fw, fc = statistics.median(floor_wall), statistics.median(floor_cpu)
    print(f"\n{len(x)} images ({data}), K = {args.k}: {work / 1e9:.1f} GFLOP; floor "
          f"{fw:.2f} s wall at the measured matmul rate ({work / fw / 1e9:.0f} GFLOP/s), "
          f"{fc:.2f} CPU-s; median of {args.rounds} rounds\n")
    print("| path | wall (s) | x floor | CPU (s) | x CPU floor | whole test set (min) "
          "| mean log p(x) (nats) | minus default's (paired, ± s.e.) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    table = {}
    for name in rows:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        mean = float(values[name].mean())
        diff, se = paired_difference(values[name], values["default"])
        table[name] = {"wall_s": w, "cpu_s": c, "x_floor": w / fw, "x_cpu_floor": c / fc,
                       "test_set_min": w * 10_000 / len(x) / 60, "mean_log_px": mean}
        print(f"| {name} | {w:.2f} | {w / fw:.2f} | {c:.2f} | {c / fc:.2f} "
              f"| {w * 10_000 / len(x) / 60:.1f} | {mean:.2f} | {diff:+.3f} ± {se:.3f} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "images": len(x), "data": data, "k": args.k, "gflop": work / 1e9,
            "floor_wall_s": fw, "floor_cpu_s": fc, "rounds": args.rounds, "rows": table,
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
