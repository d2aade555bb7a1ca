"""Training speed of tfvae on MNIST-shaped data, against its own floors.

For three models (MLP 784-400-20 batch 128; tfvae's conv VAE, latent 20,
batch 128; the MLP of Burda et al. 784-200-200-50 batch 100) it measures the
training throughput (examples per second) of:

- ``keras plain``: ``fit`` with plain Keras settings (``jit_compile=False,
  steps_per_execution=1``), the baseline of the ratios;
- ``keras plain, autotuned data``: the same, fed by the tf.data pipeline of
  the TensorFlow tutorials (``cache, shuffle, batch, prefetch(AUTOTUNE)``
  with tf.data's autotuner on) instead of :func:`tfvae.datasets.make_dataset`
  (which fixes the prefetch depth and switches the autotuner off);
- ``xla``, ``spe N``, ``xla+spe N``: ``fit`` with XLA and/or
  ``steps_per_execution=N`` (``--spe``, default tfvae's default, 8, 32 and
  128; XLA is combined with the first);
- ``fused adam``: ``keras plain`` with :class:`tfvae.FusedAdam` (tfvae's
  default optimizer) instead of ``keras.optimizers.Adam``; all rows above
  train with Keras's Adam;
- ``tfvae default``: ``fit`` after ``model.compile()``, tfvae's defaults
  (steps per execution and XLA printed in the header; ``FusedAdam``);
- ``loop``, ``loop in-graph``, ``loop in-graph xla``: a hand-written training
  loop with the same math as ``VAE.train_step`` (``elbo_terms`` drawing z
  from the model's seed stream, loss ``mean(reconstruction + beta * kl)``,
  ``FusedAdam``, the same four metrics): a Python loop calling a ``tf.function`` step
  per batch, or one ``tf.function`` running every step of the pass
  (optionally with an XLA-compiled step), the overhead floor of a framework;
  ``fit`` rows time the epoch (``on_epoch_begin`` to ``on_epoch_end``), as in
  a many-epoch ``fit``; the once-per-call cost of ``fit`` is reported apart;
- ``networks only``: ``loop in-graph`` without the VAE's own math (no
  sampling, likelihood, KL or metrics): encoder and decoder forward and
  backward and ``FusedAdam``, what any model of these networks costs;
- ``data only``: a pass over the input pipeline alone (nothing computed), to
  show that the pipeline is not the bottleneck;
- ``flop floor``: the FLOPs of one epoch over the machine's peak rate. FLOPs
  of a training step are counted for the Dense/Conv layers only (2 per
  multiply-add; element-wise ops, the likelihood and Adam are ignored): the
  forward pass, the gradient w.r.t. the activations (skipped for the first
  layer, whose input is data) and w.r.t. the weights, i.e. 3x the forward
  FLOPs less the first layer's. The peak is the best of 10 runs of a
  2048x2048 float32 ``tf.matmul`` on this machine, measured at the start and
  at the end of the run, the higher used (a dense-matmul peak, reached by no
  small-batch network, so the floor is optimistic).

Every runner is built and warmed up first (the warm-up pass also compiles;
compilation is not timed), then all are timed in ``--rounds`` interleaved
rounds of one pass each, so that slow drifts in the load of a shared machine
hit every configuration alike; the median pass is reported. A pass is 12,800
random binary 28x28x1 images for the MLPs and 2,560 for the conv VAE (a
quarter with ``--quick``); seconds per epoch are scaled to a 60,000-example
MNIST epoch. The data are held in memory, cached and prefetched
(:func:`tfvae.datasets.make_dataset`).

Usage::

    python benchmarks/train_speed.py                  # ~5 minutes on 2 CPU cores
    python benchmarks/train_speed.py --quick          # ~2 minutes, for a check
    python benchmarks/train_speed.py --models "mlp 784-400-20" --rounds 5
    python benchmarks/train_speed.py --json /tmp/speed.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

import tfvae
from tfvae.model import DEFAULT_STEPS_PER_EXECUTION

DATA_SHAPE = (28, 28, 1)
EPOCH = 60_000
MODELS = {
    # name: (network kind, latent_dim, hidden_units, batch size, examples per pass)
    "mlp 784-400-20": ("mlp", 20, (400,), 128, 12_800),
    "conv latent 20": ("conv", 20, None, 128, 2_560),
    "burda mlp 200-200-50": ("mlp", 50, (200, 200), 100, 12_800),
}
BASELINE = "keras plain"
TUNED_BASELINE = "keras plain, autotuned data"


def autotuned_dataset(x: np.ndarray, batch: int) -> tf.data.Dataset:
    """The input pipeline of the TensorFlow tutorials, autotuner on."""
    ds = tf.data.Dataset.from_tensor_slices(x).cache().shuffle(len(x), seed=0)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def build(kind: str, latent: int, hidden, likelihood="bernoulli") -> tfvae.VAE:
    """A fresh VAE with the same initial weights every time."""
    keras.utils.set_random_seed(0)
    encoder, decoder = tfvae.networks.build_networks(kind, DATA_SHAPE, latent, hidden)
    return tfvae.VAE(encoder, decoder, latent, likelihood=likelihood, seed=0)


# ------------------------------------------------------------------ FLOPs
def layer_flops(model: keras.Model) -> list[int]:
    """Forward FLOPs (2 per multiply-add) of one example, per Dense/Conv layer."""
    flops = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Dense):
            flops.append(2 * layer.kernel.shape[0] * layer.kernel.shape[1])
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            # every input pixel scatters a kh x kw x filters patch
            h, w, c_in = layer.input.shape[1:]
            kh, kw = layer.kernel_size
            flops.append(2 * h * w * kh * kw * c_in * layer.filters)
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, _ = layer.output.shape[1:]
            kh, kw = layer.kernel_size
            flops.append(2 * h * w * kh * kw * layer.kernel.shape[2] * layer.filters)
    return flops


def train_flops_per_example(vae: tfvae.VAE) -> int:
    """Forward + both backward products, less the data gradient of layer one."""
    encoder, decoder = layer_flops(vae.encoder), layer_flops(vae.decoder)
    return 3 * (sum(encoder) + sum(decoder)) - encoder[0]


def peak_matmul_flops(n: int = 2048, reps: int = 10) -> float:
    """Best FLOP/s of an n x n float32 matmul over ``reps`` timed runs."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    matmul(a, b).numpy()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# ------------------------------------------------------------- runners
# A runner performs one pass over the data and returns its wall time in
# seconds. Runners are built (and compiled, by a first pass) up front, then
# timed in interleaved rounds.
Runner = Callable[[], float]


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class _EpochTimer(keras.callbacks.Callback):
    """Wall time from ``on_epoch_begin`` to ``on_epoch_end`` (seconds)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def default_optimizer() -> keras.optimizers.Optimizer:
    """What ``VAE.compile()`` trains with: ``FusedAdam``, learning rate 1e-3."""
    return tfvae.optimizers.get_optimizer("adam")


def fit_runner(vae: tfvae.VAE, data: tf.data.Dataset, optimizer=None, **compile_kw) -> Runner:
    """One epoch of ``fit`` after ``compile(optimizer, **compile_kw)``;
    ``optimizer`` defaults to ``keras.optimizers.Adam(1e-3)``, Keras's Adam
    with the learning rate of tfvae's default.

    The runner returns the epoch's time, as in a many-epoch ``fit``; what one
    ``fit`` call costs on top (input checks, Keras's set-up; paid once per
    call, not per epoch) is appended to ``runner.call_overhead``.
    """
    vae.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), **compile_kw)
    timer = _EpochTimer()

    def run() -> float:
        total = _timed(lambda: vae.fit(data, epochs=1, verbose=0, callbacks=[timer]))
        run.call_overhead.append(total - timer.seconds)
        return timer.seconds

    run.call_overhead = []
    return run


def loop_runner(vae: tfvae.VAE, data: tf.data.Dataset, jit: bool = False,
                in_graph: bool = False) -> Runner:
    """A hand-written loop with the math of ``VAE.train_step``.

    ``in_graph=False``: a Python loop calling a compiled step per batch;
    ``in_graph=True``: one ``tf.function`` runs all steps of the pass
    (``tf.range`` over an iterator), the floor of per-step overhead. ``jit``
    compiles the step with XLA. (``train_step`` also divides the loss by the
    number of replicas and calls ``optimizer.scale_loss``: both are the
    identity here, one device and no loss scaling.)
    """
    optimizer = default_optimizer()
    variables = vae.trainable_variables
    optimizer.build(variables)
    steps = tf.constant(int(data.cardinality()))

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            reconstruction, kl = vae.elbo_terms(x, training=True)  # model's seed stream
            loss = tf.reduce_mean(reconstruction + vae.beta * kl)
        optimizer.apply(tape.gradient(loss, variables), variables)
        vae._update_metrics(reconstruction, kl, vae.beta)
        return loss

    @tf.function
    def run_pass(iterator, n):
        for _ in tf.range(n):
            step(next(iterator))

    def one_pass():
        for metric in vae.metrics:
            metric.reset_state()
        if in_graph:
            run_pass(iter(data), steps)
        else:
            for x in data:
                step(x)
        return vae.loss_tracker.result().numpy()

    return lambda: _timed(one_pass)


def networks_runner(vae: tfvae.VAE, data: tf.data.Dataset) -> Runner:
    """The networks alone: encoder and decoder forward and backward with Adam,
    no sampling, likelihood, KL or metrics (``loop in-graph`` otherwise).

    The decoder reads the first ``latent_dim`` encoder outputs; the loss is
    the sum of both networks' outputs, so every layer gets its gradients.
    """
    optimizer = default_optimizer()
    variables = vae.trainable_variables
    optimizer.build(variables)
    steps = tf.constant(int(data.cardinality()))

    @tf.function
    def run_pass(iterator, n):
        for _ in tf.range(n):
            x = next(iterator)
            with tf.GradientTape() as tape:
                h = vae.encoder(x, training=True)
                out = vae.decoder(h[:, :vae.latent_dim], training=True)
                loss = tf.reduce_sum(h) + tf.reduce_sum(out)
            optimizer.apply(tape.gradient(loss, variables), variables)

    return lambda: _timed(lambda: run_pass(iter(data), steps))


def data_runner(data: tf.data.Dataset) -> Runner:
    """A pass over the input pipeline alone, in one ``tf.function``."""

    @tf.function
    def run_pass():
        total = tf.constant(0.0)
        for x in data:
            total += x[0, 0, 0, 0]
        return total

    return lambda: _timed(lambda: run_pass().numpy())


def configurations(spe: list[int]) -> dict[str, Callable[[tfvae.VAE, dict], Runner]]:
    """Label -> runner factory taking a model and ``{"tfvae": dataset,
    "autotuned": dataset}``; ``spe``: the steps_per_execution values to try
    (XLA is combined with the first of them)."""

    def fit_with(jit, steps, pipeline="tfvae"):
        return lambda v, d: fit_runner(v, d[pipeline], jit_compile=jit, steps_per_execution=steps)

    return {
        BASELINE: fit_with(False, 1),
        TUNED_BASELINE: fit_with(False, 1, "autotuned"),
        "xla": fit_with(True, 1),
        **{f"spe {n}": fit_with(False, n) for n in sorted(set(spe))},
        f"xla+spe {spe[0]}": fit_with(True, spe[0]),
        "fused adam": lambda v, d: fit_runner(v, d["tfvae"], default_optimizer(),
                                              jit_compile=False, steps_per_execution=1),
        "tfvae default": lambda v, d: fit_runner(v, d["tfvae"], default_optimizer()),
        "loop": lambda v, d: loop_runner(v, d["tfvae"]),
        "loop in-graph": lambda v, d: loop_runner(v, d["tfvae"], in_graph=True),
        "loop in-graph xla": lambda v, d: loop_runner(v, d["tfvae"], jit=True, in_graph=True),
        "networks only": lambda v, d: networks_runner(v, d["tfvae"]),
        "data only": lambda v, d: data_runner(d["tfvae"]),
    }


def measure(kind: str, latent: int, hidden, data: dict, rounds: int,
            spe: list[int], rows: list[str] | None = None
            ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds per pass of every configuration (or of ``rows``) over
    ``rounds`` interleaved rounds, and the median extra seconds of one
    ``fit`` call per fit runner."""
    runners = {}
    for label, make in configurations(spe).items():
        if rows and label not in rows:
            continue
        runners[label] = make(build(kind, latent, hidden), data)
        runners[label]()  # compile and warm up
    seconds = {label: [] for label in runners}
    for _ in range(rounds):
        for label, run in runners.items():
            seconds[label].append(run())
    overhead = {label: statistics.median(run.call_overhead) for label, run in runners.items()
                if getattr(run, "call_overhead", None)}
    return seconds, overhead


# -------------------------------------------------------------- report
def table(results: dict) -> str:
    """Markdown: model x configuration, examples/s, s/epoch and the ratios."""
    lines = ["| model (batch) | configuration | examples/s | s per 60k epoch "
             "| x keras plain | x flop floor time |",
             "|---|---|---:|---:|---:|---:|"]
    for name, res in results.items():
        rates = res["examples_per_s"]
        floor = rates["flop floor"]
        for label, rate in rates.items():
            speedup = "" if label in ("flop floor", "data only") or BASELINE not in rates else \
                f"{rate / rates[BASELINE]:.2f}"
            slowdown = "" if label == "data only" else f"{floor / rate:.2f}"
            lines.append(f"| {name} ({res['batch']}) | {label} | {rate:,.0f} "
                         f"| {EPOCH / rate:.2f} | {speedup} | {slowdown} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a quarter of the data per pass and 2 rounds")
    p.add_argument("--rounds", type=int, default=3,
                   help="timed passes per configuration, in interleaved rounds (default 3)")
    p.add_argument("--spe", type=int, nargs="+",
                   default=[DEFAULT_STEPS_PER_EXECUTION, 8, 32, 128],
                   help="the 'many' steps_per_execution values; XLA is tried with the first "
                        f"(default: tfvae's default {DEFAULT_STEPS_PER_EXECUTION}, 8, 32, 128)")
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--rows", nargs="*", default=None, choices=list(configurations([1])),
                   metavar="ROW", help="time only these configurations (default: all)")
    p.add_argument("--check", type=float, default=5.0, metavar="PERCENT",
                   help="the regression check: tfvae default within PERCENT of networks only "
                        "(default 5); exit status 1 if a model misses it")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    if rounds < 1 or min(args.spe) < 1:
        p.error(f"--rounds and --spe must be >= 1, got {rounds} and {args.spe}")

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    peaks = [peak_matmul_flops()]
    probe = build("mlp", 2, (4,))
    probe.compile()
    defaults = {"jit_compile": bool(probe.jit_compile),
                "steps_per_execution": int(probe.steps_per_execution),
                "optimizer": type(probe.optimizer).__name__}
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, devices {devices}, "
               f"TF {tf.__version__}, Keras {keras.__version__}")
    print(f"{started}; {machine}; peak matmul {peaks[0] / 1e9:.1f} GFLOP/s (measured again at "
          f"the end); tfvae defaults {defaults}; {rounds} rounds", flush=True)

    rng = np.random.default_rng(0)
    results = {}
    for name in args.models:
        kind, latent, hidden, batch, examples = MODELS[name]
        if args.quick:
            examples //= 4
        x = (rng.random((examples, *DATA_SHAPE)) < 0.3).astype(np.float32)
        data = {"tfvae": tfvae.datasets.make_dataset(x, batch_size=batch, seed=0),
                "autotuned": autotuned_dataset(x, batch)}
        seconds, overhead = measure(kind, latent, hidden, data, rounds, args.spe, args.rows)
        rates = {label: examples / statistics.median(s) for label, s in seconds.items()}
        flops = train_flops_per_example(build(kind, latent, hidden))
        results[name] = {"batch": batch, "examples_per_pass": examples,
                         "train_mflop_per_example": flops / 1e6,
                         "seconds_per_pass": seconds, "fit_call_overhead_s": overhead,
                         "examples_per_s": rates}
        added = (f"; one fit call adds {statistics.median(overhead.values()):.2f} s to its "
                 "epochs" if overhead else "")
        print(f"  {name}: done ({flops / 1e6:.2f} MFLOP per training example{added})", flush=True)

    # The best of the two peak measurements (a busy moment lowers one).
    peaks.append(peak_matmul_flops())
    peak = max(peaks)
    for res in results.values():
        res["examples_per_s"]["flop floor"] = peak / (res["train_mflop_per_example"] * 1e6)
    print(f"\npeak matmul {peak / 1e9:.1f} GFLOP/s (best of start and end: "
          f"{', '.join(f'{p / 1e9:.1f}' for p in peaks)})")
    print(f"\nTraining throughput, median of {rounds} interleaved passes; "
          f"'x flop floor time' = (time per epoch) / (FLOPs per epoch / peak)\n")
    print(table(results))
    print("\ntfvae default: speed-up over keras plain, distance from the FLOP floor")
    for name, res in results.items():
        r = res["examples_per_s"]
        against = (f"{r['tfvae default'] / r[BASELINE]:.2f}x faster than plain Keras "
                   f"({r['tfvae default'] / r[TUNED_BASELINE]:.2f}x with its autotuned data), "
                   if BASELINE in r and TUNED_BASELINE in r else "")
        if "tfvae default" in r:
            print(f"  {name}: {against}{r['flop floor'] / r['tfvae default']:.2f}x the "
                  "FLOP-floor time")
    missed = check_against_networks(results, args.check)
    out = {"started": started, "machine": machine, "peak_matmul_gflops": peak / 1e9,
           "peak_matmul_gflops_start_end": [p / 1e9 for p in peaks],
           "defaults": defaults, "quick": args.quick, "rounds": rounds, "spe": args.spe,
           "results": results}
    out["check"] = {"percent": args.check, "missed": missed}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


def check_against_networks(results: dict, percent: float) -> list[str]:
    """Print the regression check (tfvae default at most ``percent`` slower
    than the networks alone) per model; the models that miss it."""
    missed = []
    print(f"\nregression check: tfvae default within {percent:g}% of networks only")
    for name, res in results.items():
        r = res["examples_per_s"]
        if "tfvae default" not in r or "networks only" not in r:
            continue
        slower = (r["networks only"] / r["tfvae default"] - 1) * 100
        ok = slower <= percent
        print(f"  {name}: {slower:+.1f}% ({'ok' if ok else 'MISSED'})")
        if not ok:
            missed.append(name)
    return missed


if __name__ == "__main__":
    sys.exit(1 if main()["check"]["missed"] else 0)
