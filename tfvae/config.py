"""The one declaration of a training run's settings: :class:`TrainConfig`.

Each field carries its default, its help text and its check; ``tfvae train``'s
options are generated from these fields (:func:`tfvae.cli.build_parser`), and
``tfvae.train(TrainConfig(...), out)`` is the same entry point from Python and
notebooks. Adding a training option is adding one field here (and using it in
:mod:`tfvae.training`). This module imports nothing heavy, so that ``--help``
and argument errors come before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

# Choices that live in heavier modules, named here so the CLI can list them
# without importing TensorFlow; tests check they match the registries.
NETWORK_NAMES = ("mlp", "conv")
MAX_SEED = 2**32 - 1


def _option(default, help: str, *, metavar: str | None = None, low: float | None = None,
            strict: bool = False, choices: str | None = None, identity: bool = True):
    """A config field: ``low``/``strict`` bound numbers; ``choices`` names a
    registry (``"datasets"``, ``"networks"``, ``"likelihoods"``) checked by the
    CLI; ``identity=False`` for settings a resumed run may change."""
    return field(default=default, metadata=dict(help=help, metavar=metavar, low=low,
                                                strict=strict, choices=choices,
                                                identity=identity))


@dataclass
class TrainConfig:
    """The settings of a training run (all that defines its result).

    Numbers are checked when the config is made (``ValueError`` naming the
    field, what was given and what was expected).
    """

    dataset: str = _option("mnist", "dataset (tfvae.datasets); splits: train, valid, test",
                           choices="datasets")
    likelihood: str | None = _option(
        None, "p(x|z) (tfvae.likelihoods); default: the dataset's own", choices="likelihoods")
    network: str = _option("mlp", "encoder and decoder (tfvae.networks)", choices="networks")
    hidden_units: tuple[int, ...] | None = _option(
        None, "MLP hidden layer sizes, comma-separated, e.g. 200,200 (default: 500)",
        metavar="N,N")
    latent_dim: int = _option(20, "size of z", metavar="D", low=0, strict=True)
    epochs: int = _option(20, "passes over the training split", metavar="N", low=0, strict=True)
    batch_size: int = _option(100, "examples per step", metavar="B", low=0, strict=True)
    learning_rate: float = _option(1e-3, "Adam's step size", metavar="LR", low=0, strict=True)
    beta: float = _option(1.0, "weight of the KL term", low=0)
    kl_warmup: int = _option(0, "raise beta linearly from 0 over this many steps (0: off)",
                             metavar="STEPS", low=0)
    dynamic_binarization: bool = _option(
        False, "redraw each training pixel as Bernoulli(grey value) every epoch (Burda et al.); "
        "valid and test are binarized once")
    conditional: bool = _option(
        False, "a conditional VAE: q(z|x,y) and p(x|z,y) with y the class labels of the "
        "dataset (labelled datasets only); then 'tfvae sample --label 3' draws a chosen class")
    limit: int | None = _option(None, "at most N examples per split (quick runs)", metavar="N",
                                low=0, strict=True)
    seed: int = _option(0, f"seed of the initial weights, subsets and sampling (0 to {MAX_SEED})",
                        low=0)
    minutes: float | None = _option(
        None, "stop after the epoch that ends past this many minutes of training (counted "
        "across resumes)", metavar="M", low=0, strict=True, identity=False)
    nll_samples: int = _option(0, "also estimate the test NLL with K importance samples "
                               "(conditional: -log p(x|y))",
                               metavar="K", low=0, identity=False)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["low"] is not None and value is not None:
                setattr(self, f.name, _check_bound(f, value))
        if self.seed > MAX_SEED:
            raise ValueError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed}.")
        if self.hidden_units is not None:
            units = tuple(self.hidden_units)
            if not units or any(_not_int(u) or u < 1 for u in units):
                raise ValueError(
                    f"hidden_units must be positive integers, got {self.hidden_units!r}.")
            self.hidden_units = tuple(int(u) for u in units)
        from tfvae.datasets import DATASETS, get

        if self.likelihood is None:
            self.likelihood = get(self.dataset).likelihood
        self.likelihood = self.likelihood.strip().lower()
        if self.conditional and not get(self.dataset).label_names:
            labelled = ", ".join(d.name for d in DATASETS.values() if d.label_names)
            raise ValueError(f"conditional needs class labels, and {self.dataset} has none; "
                             f"expected a labelled dataset ({labelled}).")

    def identity(self) -> dict:
        """The fields a resumed run must share with the stored run."""
        fields = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if not f.metadata["identity"]:
                fields.pop(f.name)
        if fields["hidden_units"] is not None:
            fields["hidden_units"] = list(fields["hidden_units"])
        return fields

    @classmethod
    def defaults(cls) -> dict:
        """Default values of the fields (runs written before a field existed used these)."""
        return {f.name: f.default for f in dataclasses.fields(cls)}


def _not_int(value) -> bool:
    return isinstance(value, bool) or not isinstance(value, numbers.Integral)


def _check_bound(f: dataclasses.Field, value):
    low, strict = f.metadata["low"], f.metadata["strict"]
    wants_int = f.type in ("int", "int | None")
    expected = f"{'an integer' if wants_int else 'a number'} {'>' if strict else '>='} {low:g}"
    bad = isinstance(value, bool) or (_not_int(value) if wants_int
                                      else not isinstance(value, numbers.Real))
    if not bad:
        bad = not math.isfinite(value) or value < low or (strict and value == low)
    if bad:
        raise ValueError(f"{f.name} must be {expected}, got {value!r}.")
    return int(value) if wants_int else float(value)
