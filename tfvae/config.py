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
PRIOR_NAMES = ("standard_normal", "mog", "mixture", "vamp")
# Components of a learned prior: Tomczak & Welling's K for MNIST (VampPrior and MoG).
DEFAULT_PRIOR_COMPONENTS = 500
OBJECTIVE_NAMES = ("elbo", "iwae", "dreg")
MAX_SEED = 2**32 - 1
# Hidden layers of each IAF step's MADE (tfvae.flows) when not given.
DEFAULT_IAF_HIDDEN_UNITS = (200, 200)


def _option(default, help: str, *, metavar: str | None = None, low: float | None = None,
            strict: bool = False, choices: str | None = None, identity: bool = True):
    """A config field: ``low``/``strict`` bound numbers; ``choices`` names a
    registry (``"datasets"``, ``"networks"``, ``"likelihoods"``, ``"priors"``,
    ``"objectives"``) checked by the CLI; ``identity=False`` for settings a resumed run
    may change."""
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
    final_learning_rate: float | None = _option(
        None, "decay the step size exponentially from --learning-rate to this by the end of "
        "training: of --minutes when set, else of --epochs (Burda et al. decay it by 10; "
        "default: constant)", metavar="LR", low=0, strict=True)
    beta: float = _option(1.0, "weight of the KL term", low=0)
    kl_warmup: int = _option(0, "raise beta linearly from 0 over this many steps (0: off)",
                             metavar="STEPS", low=0)
    objective: str = _option(
        "elbo", "what training maximises: the ELBO, the importance-weighted bound L_k (iwae; "
        "Burda et al. 2015) or L_k with the doubly reparameterised encoder gradient (dreg; "
        "Tucker et al. 2018)", choices="objectives")
    k: int = _option(1, "importance samples per example for iwae/dreg", metavar="K", low=0,
                     strict=True)
    free_bits: float = _option(
        0.0, "floor lambda (nats per latent dimension) on each dimension's batch-mean KL in the "
        "ELBO objective (Kingma et al. 2016; 0: off); the reported ELBO stays the true one",
        metavar="LAMBDA", low=0)
    dynamic_binarization: bool = _option(
        False, "redraw each training pixel as Bernoulli(grey value) every epoch (Burda et al.); "
        "valid and test are binarized once")
    conditional: bool = _option(
        False, "a conditional VAE: q(z|x,y) and p(x|z,y) with y the class labels of the "
        "dataset (labelled datasets only); then 'tfvae sample --label 3' draws a chosen class")
    prior: str = _option(
        "standard_normal", "p(z) (tfvae.priors): N(0, I), a learned mixture of Gaussians (mog, "
        "mixture) or the VampPrior (vamp; unconditional only)", choices="priors")
    prior_components: int = _option(
        DEFAULT_PRIOR_COMPONENTS, "components of a mog prior, pseudo-inputs of a vamp prior",
        metavar="K", low=0, strict=True)
    iaf_steps: int = _option(
        0, "inverse autoregressive flow steps on q(z|x) (tfvae.flows, Kingma et al. 2016; "
        "0: the diagonal Gaussian)", metavar="T", low=0)
    iaf_hidden_units: tuple[int, ...] | None = _option(
        None, "hidden layer sizes of each IAF step's MADE, comma-separated (default: "
        f"{','.join(map(str, DEFAULT_IAF_HIDDEN_UNITS))}; needs --iaf-steps)", metavar="N,N")
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
        for name in ("hidden_units", "iaf_hidden_units"):
            units = getattr(self, name)
            if units is not None:
                if (isinstance(units, (str, bytes)) or not units
                        or any(_not_int(u) or u < 1 for u in units)):
                    raise ValueError(f"{name} must be positive integers, got {units!r}.")
                setattr(self, name, tuple(int(u) for u in units))
        if self.iaf_hidden_units is not None and not self.iaf_steps:
            raise ValueError(f"iaf_hidden_units={self.iaf_hidden_units} is given but iaf_steps is "
                             f"0 (no flow); expected iaf_steps >= 1, or no iaf_hidden_units.")
        from tfvae.datasets import DATASETS, get

        if self.likelihood is None:
            self.likelihood = get(self.dataset).likelihood
        self.likelihood = self.likelihood.strip().lower()
        self.prior = self.prior.strip().lower()
        if self.prior not in PRIOR_NAMES:
            raise ValueError(f"Unknown prior {self.prior!r}; expected one of "
                             f"{', '.join(PRIOR_NAMES)}.")
        self._check_objective()
        if self.conditional and self.prior == "vamp":
            raise ValueError("prior 'vamp' needs an unconditional VAE (its pseudo-inputs have no "
                             "labels); expected conditional=False, or the prior 'mog' or "
                             "'standard_normal'.")
        if self.conditional and not get(self.dataset).label_names:
            labelled = ", ".join(d.name for d in DATASETS.values() if d.label_names)
            raise ValueError(f"conditional needs class labels, and {self.dataset} has none; "
                             f"expected a labelled dataset ({labelled}).")

    def _check_objective(self):
        """The combinations that :class:`tfvae.VAE` refuses, refused before any work."""
        if self.objective not in OBJECTIVE_NAMES:
            raise ValueError(f"Unknown objective {self.objective!r}; expected one of "
                             f"{', '.join(OBJECTIVE_NAMES)}.")
        if self.objective == "elbo" and self.k > 1:
            raise ValueError(f"k={self.k} importance samples need objective 'iwae' or 'dreg'; "
                             f"the objective 'elbo' draws one sample (expected k=1).")
        if self.objective != "elbo":
            for name, neutral in (("beta", 1.0), ("kl_warmup", 0), ("free_bits", 0.0)):
                if getattr(self, name) != neutral:
                    raise ValueError(f"{name} changes the ELBO's KL term, which objective "
                                     f"{self.objective!r} does not have; expected {name}="
                                     f"{neutral}, or objective 'elbo'.")
        if self.free_bits and (self.iaf_steps or self.prior != "standard_normal"):
            raise ValueError(f"free_bits needs each latent dimension's KL in closed form: a "
                             f"diagonal Gaussian q(z|x) and the standard_normal prior, not "
                             f"iaf_steps={self.iaf_steps}, prior={self.prior!r}.")

    def identity(self) -> dict:
        """The fields a resumed run must share with the stored run."""
        fields = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if not f.metadata["identity"]:
                fields.pop(f.name)
        for name in ("hidden_units", "iaf_hidden_units"):  # as JSON stores them
            if fields[name] is not None:
                fields[name] = list(fields[name])
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
