"""Do a conditional VAE's samples show the class asked for? (issue 12's check)

Trains the reference classifier (:mod:`tfvae.classifier`) on the real
training images and reports its test accuracy, trains a conditional VAE with
``tfvae.train`` (the main job's settings plus ``conditional=True``, or loads
the one already in ``--run``), and reports the fraction of its class-
conditional samples (mean images E[x|z,y], z ~ p(z)) that the classifier
labels as the class asked for, with the run's test ELBO and that of the same
model trained without labels.

Usage::

    python benchmarks/conditional_samples.py --dataset mnist --latent-dim 4 \\
        --out benchmarks/results/conditional_samples_mnist.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import tfvae
from tfvae import classifier, datasets
from tfvae.files import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument("--epochs", type=int, default=20, help="of the conditional VAE")
    parser.add_argument("--latent-dim", type=int, default=20, help="size of z")
    parser.add_argument("--classifier-epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=100, help="samples per class")
    parser.add_argument("--run", default=None,
                        help="run folder (default runs/DATASET_conditional; the unconditional "
                             "model beside it, RUN_unconditional)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here (JSON)")
    args = parser.parse_args()
    run = args.run or f"runs/{args.dataset}_conditional"

    start = time.time()
    x, y = datasets.load(args.dataset, "train")
    x_test, y_test = datasets.load(args.dataset, "test")
    judge = classifier.train_classifier(x, y, len(datasets.get(args.dataset).label_names),
                                        epochs=args.classifier_epochs, verbose=2)
    result = {"classifier_test_accuracy": classifier.accuracy(judge, x_test, y_test),
              "classifier_seconds": round(time.time() - start, 1)}
    print(json.dumps(result), flush=True)

    start = time.time()
    settings = dict(dataset=args.dataset, epochs=args.epochs, latent_dim=args.latent_dim)
    metrics = tfvae.train(tfvae.TrainConfig(conditional=True, **settings), run, verbose=2)
    model = tfvae.checkpoints.load_model(f"{run}/model.keras")
    check = classifier.conditional_sample_accuracy(model, judge, per_class=args.per_class)
    result.update(latent_dim=args.latent_dim, cvae_test_elbo=metrics["test"]["elbo"],
                  cvae_seconds=round(time.time() - start, 1),
                  **{f"samples_{k}": v for k, v in check.items()})
    # The same model without labels: do labels raise the bound at this latent size?
    unconditional = tfvae.train(tfvae.TrainConfig(**settings), f"{run}_unconditional", verbose=2)
    result["vae_test_elbo"] = unconditional["test"]["elbo"]
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
