"""M2 on MNIST with 100 labels (issue 12): semi-supervised VAE against the
same 100 labelled examples with the classifier alone.

A fixed seed picks 10 labelled training images per class; the other training
images (of the 54,000 of tfvae's MNIST train split) are unlabelled. The M2
model (:class:`tfvae.semi_supervised.SemiSupervisedVAE`: MLP encoder,
decoder and classifier with 500 hidden units, as in Kingma et al. 2014)
trains on :func:`tfvae.semi_supervised.mixed_batches` until ``--minutes`` of
training have passed (counted across resumes), reporting the test accuracy
of q(y|x) after every epoch. The run folder (``--out``) holds a checkpoint
after every epoch: run the same command again after an interruption and it
continues where the last epoch ended. The baseline, the same classifier
network trained on the 100 labelled images alone (cross-entropy, Adam), is
trained once and kept in the folder. Prints a table and writes
``benchmarks/results/m2_mnist.json`` (``--quick``: ``m2_mnist_quick.json``).

``--m1-minutes M`` runs the paper's stacked "M1+M2" within the same budget:
first M1, an unconditional VAE (MLP 200-200, 50-D z, dynamically binarized
images) trained without labels for ``M`` of the ``--minutes`` (its own
resumable run folder, ``<out>.m1``), then M2 on M1's codes
(:func:`tfvae.semi_supervised.m1_features`: posterior means of its active
units, standardised; a learned per-feature Normal p(features|z,y)) for the
rest. It also trains the classifier alone on the 100 labelled codes, and
writes ``m1_m2_mnist.json``.

Usage::

    python benchmarks/m2_mnist.py --minutes 60                  # resumable
    python benchmarks/m2_mnist.py --minutes 60 --m1-minutes 20  # M1+M2
    python benchmarks/m2_mnist.py --quick                       # about 2 minutes
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import keras
import numpy as np

import tfvae
from tfvae import callbacks as cbs
from tfvae import checkpoints, datasets, runs, semi_supervised
from tfvae.files import read_json, write_json
from tfvae.likelihoods import Normal
from tfvae.semi_supervised import SemiSupervisedVAE, mixed_batches, paper_alpha, pick_labels

RESULTS = Path(__file__).parent / "results"
BASELINE = "baseline.json"  # in the run folder
M1_BASELINE = "baseline_m1.json"  # the classifier alone on M1's codes
M1_HIDDEN = (200, 200)  # the Burda et al. VAE of burda_nll.py


class TrainSeconds(keras.callbacks.Callback):
    """Logs ``train_seconds``: each epoch's training time, without its evaluation."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self.seconds is None:  # the validation at the end of an epoch
            self.seconds = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["train_seconds"] = self.seconds or time.perf_counter() - self.start


def build_m2(config: dict, data_shape, alpha: float) -> SemiSupervisedVAE:
    # On M1's standardised codes p(features|z,y) is a Normal with a learned scale each.
    likelihood = (Normal("learned", per_pixel=True, init_scale=1.0) if config.get("m1_minutes")
                  else "bernoulli")
    return semi_supervised.build_m2(data_shape, 10, config["latent_dim"], (config["hidden"],),
                                    alpha, config["learning_rate"], config["seed"], likelihood)


def train_m1(out: Path, minutes: float, limit: int | None, seed: int) -> dict:
    """M1: the unlabelled VAE, trained (or resumed) in its own run folder; its
    model, epochs and training minutes."""
    config = tfvae.TrainConfig(dataset="mnist", likelihood="bernoulli", network="mlp",
                               hidden_units=M1_HIDDEN, latent_dim=50, epochs=100_000,
                               dynamic_binarization=True, minutes=minutes, limit=limit,
                               seed=seed)
    metrics = tfvae.train(config, out, verbose=2)
    return {"model": checkpoints.load_model(Path(out) / runs.MODEL), "epochs": metrics["epochs"],
            "train_minutes": round(metrics["history"]["train_minutes"][-1], 2),
            "test_elbo": round(metrics["test"]["elbo"], 2)}


def supervised_baseline(x, y, x_test, y_test, config: dict, steps: int) -> dict:
    """The M2 classifier network trained on the labelled examples alone."""
    start = time.time()
    model = semi_supervised.supervised_baseline(x, y, 10, (config["hidden"],),
                                                config["learning_rate"], steps, config["seed"])
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), 1) == y_test))
    return {"test_accuracy": accuracy, "steps": steps, "seconds": round(time.time() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="training budget, counted across resumes")
    parser.add_argument("--quick", action="store_true",
                        help="5,000 training and 2,000 test images, 2 minutes (a check of the "
                             "script)")
    parser.add_argument("--per-class", type=int, default=10, help="labels per class")
    parser.add_argument("--alpha", type=float, default=None,
                        help="weight of log q(y|x) per labelled example (default: the paper's "
                             "0.1 * N / N_labelled)")
    parser.add_argument("--batch-size", type=int, default=100, help="unlabelled per batch")
    parser.add_argument("--labelled-batch-size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default runs/m2_mnist, or runs/m2_mnist_quick)")
    parser.add_argument("--m1-minutes", type=float, default=0.0,
                        help="train M1 (an unlabelled VAE) for this many of the --minutes, then "
                             "M2 on its codes (M1+M2; default 0: M2 on the pixels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    limit, minutes = (5000, min(args.minutes, 2.0)) if args.quick else (None, args.minutes)
    m1_minutes = min(args.m1_minutes, minutes / 2) if args.quick else args.m1_minutes
    if not 0 <= m1_minutes < minutes:
        parser.error(f"--m1-minutes must be from 0 to below --minutes ({minutes}), got "
                     f"{m1_minutes}.")
    name = ("m1_m2_mnist" if m1_minutes else "m2_mnist") + ("_quick" if args.quick else "")
    out = args.out or Path("runs") / name

    x, y = datasets.load("mnist", "train", limit=limit, seed=args.seed)
    x_test, y_test = datasets.load("mnist", "test", limit=2000 if args.quick else None)
    given = pick_labels(y, args.per_class, 10, args.seed)
    labelled = given >= 0
    pixel_data = (x[labelled], given[labelled], x_test, y_test)
    m1 = None
    if m1_minutes:
        m1 = train_m1(out.parent / f"{out.name}.m1", m1_minutes, limit, args.seed)
        x, x_test = semi_supervised.m1_features(m1.pop("model"), x, x_test)
        m1["active_units"] = x.shape[1]
        print(f"M1: {m1['epochs']} epochs in {m1['train_minutes']} min, test ELBO "
              f"{m1['test_elbo']}, {x.shape[1]} active units: M2 trains on them for the other "
              f"{minutes - m1['train_minutes']:.2f} min.", flush=True)
    alpha = args.alpha if args.alpha is not None else paper_alpha(len(x), int(labelled.sum()))
    config = {"examples": len(x), "labelled": int(labelled.sum()), "alpha": alpha,
              "batch_size": args.batch_size, "labelled_batch_size": args.labelled_batch_size,
              "latent_dim": 50, "hidden": 500, "learning_rate": 3e-4, "seed": args.seed}
    if m1:
        config.update(m1_minutes=m1_minutes, m1_hidden=list(M1_HIDDEN),
                      features=int(x.shape[1]))
    train = mixed_batches(x, given, 10, args.batch_size, args.labelled_batch_size, args.seed)
    steps_per_epoch = math.ceil((~labelled).sum() / args.batch_size)

    run = runs.RunFolder(out)
    run.check_ours()
    with run.locked():
        status = run.status(config)  # "new" or "resume": this script never writes metrics.json
        resume = run.resume_point(steps_per_epoch) if status == "resume" else None
        if resume is None:
            run.start(config, overwrite=True)
            (run / BASELINE).unlink(missing_ok=True)
            (run / M1_BASELINE).unlink(missing_ok=True)
        baselines = {BASELINE: pixel_data}
        if m1:
            baselines[M1_BASELINE] = (x[labelled], given[labelled], x_test, y_test)
        found = {}  # file: the classifier-alone result, trained once per run folder
        for file, data in baselines.items():
            found[file] = read_json(run / file)
            if found[file] is None:
                found[file] = supervised_baseline(*data, config, steps=300)
                write_json(run / file, found[file])
            print(f"Baseline, classifier alone on {config['labelled']} labelled "
                  f"{'M1 codes' if file == M1_BASELINE else 'images'}: test accuracy "
                  f"{found[file]['test_accuracy']:.4f} ({found[file]['seconds']} s)", flush=True)
        baseline = found[BASELINE]

        if resume is None:
            model, initial_epoch, history = build_m2(config, x.shape[1:], alpha), 0, {}
        else:
            model = checkpoints.load_model(resume.model_file)
            initial_epoch, history = resume.epoch, resume.history
            keras.utils.set_random_seed(args.seed + initial_epoch)
            print(f"Resuming {out} after epoch {initial_epoch}.", flush=True)
        spent = (history.get("train_minutes") or [0.0])[-1]
        saver = cbs.EpochCheckpoint(run, history=history)
        m2_minutes = minutes - (m1["train_minutes"] if m1 else 0.0)
        budget = cbs.TimeBudget(m2_minutes, spent)
        if spent < m2_minutes:
            model.fit(train, validation_data=(x_test, y_test), epochs=10_000,
                      initial_epoch=initial_epoch, callbacks=[TrainSeconds(), budget, saver],
                      verbose=2)
        history = saver.history

    epochs = len(history.get("loss", []))
    seconds = history["train_seconds"]
    # Examples a step: the unlabelled batch and the labelled one beside it.
    per_step = args.batch_size + (args.labelled_batch_size
                                  or min(config["labelled"], max(1, args.batch_size // 10)))
    throughput = [round(steps_per_epoch * per_step / s, 1) for s in seconds]
    result = {"config": config, "baseline": baseline, "epochs": epochs,
              **({"m1": m1, "m1_baseline": found[M1_BASELINE]} if m1 else {}),
              "train_minutes": round(history["train_minutes"][-1], 2),
              "test_accuracy": [round(a, 4) for a in history["val_accuracy"]],
              "examples_per_second": throughput,
              "note": "examples/s: unlabelled plus labelled examples of the epoch's steps "
                      "over its training time (the test-set evaluation excluded)"}
    print(f"\n{'epoch':>5} {'minutes':>8} {'test accuracy':>14} {'examples/s':>11}")
    for i, (m, a, t) in enumerate(zip(history["train_minutes"], result["test_accuracy"],
                                      throughput)):
        print(f"{i + 1:>5} {m:>8.2f} {a:>14.4f} {t:>11.1f}")
    print(f"\n| model ({config['labelled']} labels) | test accuracy |\n|---|---|\n"
          f"| classifier alone | {baseline['test_accuracy']:.4f} |")
    if m1:
        print(f"| classifier alone on M1's codes ({m1['epochs']} M1 epochs, "
              f"{m1['train_minutes']} min) | {result['m1_baseline']['test_accuracy']:.4f} |")
    print(f"| {'M1+M2' if m1 else 'M2'} after {epochs} M2 epochs, "
          f"{result['train_minutes'] + (m1['train_minutes'] if m1 else 0):.2f} min in all | "
          f"{result['test_accuracy'][-1]:.4f} |")
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"{name}.json", result)
    print(f"Wrote {RESULTS / f'{name}.json'}")


if __name__ == "__main__":
    main()
