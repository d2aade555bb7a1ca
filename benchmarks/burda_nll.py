"""Reference run: test NLL of the MLP VAE of Burda et al. (2015) on MNIST.

Model (Burda et al., section 5): latent 50, encoder and decoder with two tanh
layers of 200 units, Bernoulli pixels; trained on dynamically binarised grey
MNIST (60k training images, each pixel redrawn as Bernoulli(grey value) every
epoch) with Adam (lr 1e-3, batch 100). Training stops after ``--epochs`` or
after the first epoch that ends past ``--minutes`` of wall time, whichever
comes first. The test set (10k grey MNIST test images) is binarised ONCE with a
fixed seed (``tfvae.datasets.load(..., binarized=True, seed=0)``), and log p(x)
is estimated with k importance samples (k=5000 in the paper).

Paper, Table 1 (VAE, 1 stochastic layer, k=1 training): 86.76 nats after
3,280 epochs.

Usage::

    python benchmarks/burda_nll.py --minutes 40 --k 5000 \
        --model /tmp/burda/vae.keras --out /tmp/burda/result.json
    # continue an interrupted run (same budget, minutes already trained count)
    python benchmarks/burda_nll.py --resume --minutes 60 --k 5000 --model /tmp/burda/vae.keras
    # evaluate a saved model only
    python benchmarks/burda_nll.py --epochs 0 --model /tmp/burda/vae.keras --k 5000

The JSON holds the settings, the training time and epochs, the final training
ELBO, and the test NLL (mean and standard error over test images).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np

import tfvae
import tfvae.checkpoints

PAPER_NLL = 86.76  # Burda et al. 2015, Table 1, VAE k=1, one stochastic layer
PAPER_EPOCHS = 3280


def progress_path(model_path: Path) -> Path:
    """Where the epochs and minutes behind a saved model are recorded."""
    return model_path.with_name(model_path.name + ".progress.json")


class WallClockBudget(keras.callbacks.Callback):
    """Stop after the epoch that ends past ``seconds`` of training (counting
    ``minutes_before`` from an earlier, resumed session); save the model (with
    its optimizer state) and its progress every ``save_every`` epochs, so that
    an interrupted run keeps its model and can ``--resume``."""

    def __init__(self, seconds: float, model_path: Path, save_every: int = 25,
                 minutes_before: float = 0.0):
        super().__init__()
        self.seconds = seconds
        self.model_path = model_path
        self.save_every = save_every
        self.minutes_before = minutes_before
        self.epochs_done = 0
        self.start = None

    def minutes(self) -> float:
        return self.minutes_before + (time.perf_counter() - self.start) / 60

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done = epoch + 1
        if logs is not None:
            logs["wall_minutes"] = self.minutes()
        if self.save_every and self.epochs_done % self.save_every == 0:
            self.save()
        if self.minutes() * 60 > self.seconds:
            self.model.stop_training = True

    def save(self) -> None:
        tfvae.checkpoints.save_model(self.model, self.model_path)  # atomic
        tfvae.checkpoints.write_json(progress_path(self.model_path),
                                     {"epochs": self.epochs_done, "train_minutes": self.minutes()})


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=40.0,
                   help="training wall-clock budget (stops after the epoch that crosses it)")
    p.add_argument("--epochs", type=int, default=PAPER_EPOCHS,
                   help="maximum epochs (0: evaluate the saved --model only)")
    p.add_argument("--k", type=int, default=5000, help="importance samples for log p(x)")
    p.add_argument("--test-limit", type=int, default=None,
                   help="evaluate on a random subset of this many test images (seed 0)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--eval-batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=Path, default=Path("/tmp/burda/vae.keras"))
    p.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --model (and its .progress.json); the "
                        "--minutes budget counts the minutes already trained")
    p.add_argument("--jit", choices=("on", "off"), default=None,
                   help="jit_compile for training (default: tfvae's default)")
    p.add_argument("--steps-per-execution", type=int, default=None,
                   help="steps per compiled call (default: tfvae's default)")
    return p.parse_args(argv)


def build(seed: int, jit: str | None = None,
          steps_per_execution: int | None = None) -> tfvae.VAE:
    keras.utils.set_random_seed(seed)
    encoder, decoder = tfvae.networks.build_networks("mlp", (28, 28, 1), 50,
                                                     hidden_units=(200, 200))
    model = tfvae.VAE(encoder, decoder, latent_dim=50, likelihood="bernoulli", seed=seed)
    overrides = {}
    if jit is not None:
        overrides["jit_compile"] = jit == "on"
    if steps_per_execution is not None:
        overrides["steps_per_execution"] = steps_per_execution
    model.compile(optimizer=keras.optimizers.Adam(1e-3), **overrides)
    return model


def train(args) -> tuple[tfvae.VAE, dict]:
    x_train, _ = tfvae.datasets.load("mnist", "train")
    data = tfvae.datasets.make_dataset(x_train, batch_size=args.batch_size,
                                       dynamic_binarization=True, seed=args.seed)
    progress = tfvae.checkpoints.read_json(progress_path(args.model)) if args.resume else None
    if args.resume and progress is None:
        raise SystemExit(f"--resume: no progress file {progress_path(args.model)} beside the model")
    if progress is None:
        model, initial_epoch, minutes_before = build(args.seed, args.jit,
                                                     args.steps_per_execution), 0, 0.0
    else:  # the saved model carries its optimizer state
        model = tfvae.checkpoints.load_model(args.model)
        initial_epoch, minutes_before = progress["epochs"], progress["train_minutes"]
        print(f"Resuming {args.model} after epoch {initial_epoch} "
              f"({minutes_before:.1f} min trained).", flush=True)
    args.model.parent.mkdir(parents=True, exist_ok=True)
    budget = WallClockBudget(args.minutes * 60, args.model, minutes_before=minutes_before)
    budget.epochs_done = initial_epoch
    history = model.fit(data, epochs=args.epochs, initial_epoch=initial_epoch,
                        callbacks=[budget], verbose=2)
    budget.save()
    info = {
        "epochs": budget.epochs_done,
        "resumed_after_epoch": initial_epoch,
        "train_minutes": budget.minutes(),
        "final_train_elbo": float(history.history["elbo"][-1]),
        "jit_compile": bool(model.jit_compile),
        "steps_per_execution": int(model.steps_per_execution),
    }
    return model, info


def evaluate_nll(model: tfvae.VAE, args) -> dict:
    x_test, _ = tfvae.datasets.load("mnist", "test", binarized=True, seed=0,
                                    limit=args.test_limit)
    # Time one batch first (after compiling) to state the cost of the whole set.
    batch = x_test[:args.eval_batch_size]
    model.log_likelihood(batch, num_samples=args.k, batch_size=args.eval_batch_size, verbose=0)
    t0 = time.perf_counter()
    model.log_likelihood(batch, num_samples=args.k, batch_size=args.eval_batch_size, verbose=0)
    per_batch = time.perf_counter() - t0
    n_batches = -(-len(x_test) // args.eval_batch_size)
    print(f"NLL k={args.k}: {per_batch:.1f} s per batch of {len(batch)}, "
          f"~{per_batch * n_batches / 60:.1f} min for {len(x_test)} test images", flush=True)
    t0 = time.perf_counter()
    log_px = model.log_likelihood(x_test, num_samples=args.k,
                                  batch_size=args.eval_batch_size, verbose=2, seed=args.seed)
    nll = -log_px
    return {
        "test_images": int(len(x_test)),
        "test_set": "grey MNIST test set binarised once: tfvae.datasets.load('mnist', 'test', "
                    "binarized=True, seed=0)" + ("" if args.test_limit is None else
                                                 f", random subset of {args.test_limit} (seed 0)"),
        "k": args.k,
        "nll_nats": float(nll.mean()),
        "nll_stderr": float(nll.std(ddof=1) / np.sqrt(len(nll))) if len(nll) > 1 else None,
        "nll_minutes": (time.perf_counter() - t0) / 60,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = {"paper_nll_nats": PAPER_NLL, "paper_epochs": PAPER_EPOCHS,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
              "settings": {k: str(v) for k, v in vars(args).items()}}
    if args.epochs > 0:
        model, info = train(args)
        result["training"] = info
    else:
        model = tfvae.checkpoints.load_model(args.model)
        progress = tfvae.checkpoints.read_json(progress_path(args.model))
        if progress is not None:  # how the evaluated model was trained
            result["training"] = progress
    result["evaluation"] = evaluate_nll(model, args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
