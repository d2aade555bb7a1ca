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

Usage::

    python benchmarks/m2_mnist.py --minutes 60            # resumable
    python benchmarks/m2_mnist.py --quick                 # about 2 minutes
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import keras
import numpy as np

from tfvae import callbacks as cbs
from tfvae import checkpoints, datasets, runs, semi_supervised
from tfvae.files import read_json, write_json
from tfvae.semi_supervised import SemiSupervisedVAE, mixed_batches, paper_alpha, pick_labels

RESULTS = Path(__file__).parent / "results"
BASELINE = "baseline.json"  # in the run folder


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
    return semi_supervised.build_m2(data_shape, 10, config["latent_dim"], (config["hidden"],),
                                    alpha, config["learning_rate"], config["seed"])


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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    limit, minutes = (5000, min(args.minutes, 2.0)) if args.quick else (None, args.minutes)
    name = "m2_mnist_quick" if args.quick else "m2_mnist"
    out = args.out or Path("runs") / name

    x, y = datasets.load("mnist", "train", limit=limit, seed=args.seed)
    x_test, y_test = datasets.load("mnist", "test", limit=2000 if args.quick else None)
    given = pick_labels(y, args.per_class, 10, args.seed)
    labelled = given >= 0
    alpha = args.alpha if args.alpha is not None else paper_alpha(len(x), int(labelled.sum()))
    config = {"examples": len(x), "labelled": int(labelled.sum()), "alpha": alpha,
              "batch_size": args.batch_size, "labelled_batch_size": args.labelled_batch_size,
              "latent_dim": 50, "hidden": 500, "learning_rate": 3e-4, "seed": args.seed}
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
        baseline = read_json(run / BASELINE)
        if baseline is None:
            baseline = supervised_baseline(x[labelled], given[labelled], x_test, y_test, config,
                                           steps=300)
            write_json(run / BASELINE, baseline)
        print(f"Baseline, classifier alone on {config['labelled']} labels: test accuracy "
              f"{baseline['test_accuracy']:.4f} ({baseline['seconds']} s)", flush=True)

        if resume is None:
            model, initial_epoch, history = build_m2(config, x.shape[1:], alpha), 0, {}
        else:
            model = checkpoints.load_model(resume.model_file)
            initial_epoch, history = resume.epoch, resume.history
            keras.utils.set_random_seed(args.seed + initial_epoch)
            print(f"Resuming {out} after epoch {initial_epoch}.", flush=True)
        spent = (history.get("train_minutes") or [0.0])[-1]
        saver = cbs.EpochCheckpoint(run, history=history)
        budget = cbs.TimeBudget(minutes, spent)
        if spent < minutes:
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
          f"| classifier alone | {baseline['test_accuracy']:.4f} |\n"
          f"| M2 after {epochs} epochs, {result['train_minutes']} min | "
          f"{result['test_accuracy'][-1]:.4f} |")
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"{name}.json", result)
    print(f"Wrote {RESULTS / f'{name}.json'}")


if __name__ == "__main__":
    main()
