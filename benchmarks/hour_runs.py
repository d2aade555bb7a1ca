"""Issue 13's table: the one-CPU-hour Burda runs (``burda_nll.py`` JSON files) against their goals.

Each variant is one ``burda_nll.py --minutes 60 ... --out benchmarks/results/burda_nll_<name>.json``
run; this script reads those files, names each run from its settings, compares it with the plain
VAE of the same training schedule and prints a Markdown table with the goal of each row: a run
with a schedule (KL warm-up, step-size decay) is compared with the plain VAE trained on the same
schedule where that run exists, every other run with the plain VAE (``--baseline``). Where
both files hold per-image NLLs of the same test images, the difference and its standard error are
paired over images (much tighter than two independent standard errors); otherwise the two standard
errors are combined as if independent.

The paper's 86.76 is over all 10,000 test images, and the 2,000-image subset is not a fair sample of
its difficulty for every model, so a goal stated against the paper is judged on a full-test-set
evaluation of the same model: ``burda_nll.py --evaluate-only --run <run> --k 5000 --out
benchmarks/results/burda_full_test_<name>.json`` beside ``burda_nll_<name>.json`` (its own column,
with the difference from the run's reference where that has one too, paired over all test images).

Usage::

    python benchmarks/hour_runs.py                 # every benchmarks/results/burda_nll_*.json
    python benchmarks/hour_runs.py --baseline benchmarks/results/burda_nll_baseline.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
# Settings that change how a model is trained, not which model: a run is compared with the plain VAE
# trained the same way.
SCHEDULE = ("kl_warmup", "final_learning_rate")
# A run's evaluation on all 10,000 test images (burda_nll.py --evaluate-only), beside its file.
FULL_TEST_PREFIX = "burda_full_test_"


def variant(settings: dict) -> dict:
    """The options that make a run differ from the plain VAE (settings are stored as strings)."""
    parts = {}
    if settings.get("objective", "elbo") != "elbo":
        parts["objective"] = f"{settings['objective'].upper()} k={settings.get('train_k', '1')}"
    if settings.get("prior", "standard_normal") != "standard_normal":
        parts["prior"] = f"{settings['prior']} ({settings.get('prior_components')} components)"
    if int(settings.get("iaf_steps", "0")) > 0:
        parts["iaf"] = f"IAF {settings['iaf_steps']} steps"
    if float(settings.get("free_bits", "0")) > 0:
        parts["free_bits"] = f"free bits {settings['free_bits']}"
    if int(settings.get("kl_warmup", "0")) > 0:
        parts["kl_warmup"] = f"KL warm-up {settings['kl_warmup']} steps"
    if settings.get("final_learning_rate", "None") != "None":
        parts["final_learning_rate"] = f"step size decayed to {settings['final_learning_rate']}"
    return parts


def goal(parts: dict, paper_nll: float) -> tuple[str, float | None, str]:
    """(goal text, threshold, what the threshold applies to: 'delta' or 'nll').
    A schedule (KL warm-up, step-size decay) is not one of issue 13's options: it does not make
    a combination."""
    parts = options(parts)
    if len(parts) > 1:
        return f"≤ {paper_nll} nats (the paper's 3,280-epoch VAE)", paper_nll, "nll"
    if "objective" in parts:
        return "≥ 0.5 nat better than the VAE", -0.5, "delta"
    if "prior" in parts and parts["prior"].startswith("vamp"):
        return "≥ 1 nat better than the standard prior", -1.0, "delta"
    if "iaf" in parts:
        return "≥ 0.5 nat better than the diagonal posterior", -0.5, "delta"
    return "", None, ""


def options(parts: dict) -> dict:
    """The parts of ``variant`` that choose the model (objective, prior, posterior, free bits)."""
    return {key: value for key, value in parts.items() if key not in SCHEDULE}


def schedule(parts: dict) -> tuple:
    """The parts of ``variant`` that choose how it is trained (a hashable key)."""
    return tuple(sorted((key, value) for key, value in parts.items() if key in SCHEDULE))


def references(runs: dict[Path, dict], baseline: Path) -> dict[Path, Path | None]:
    """Each run's reference: the plain VAE (no option) trained on the same schedule when that run is
    among ``runs``, else ``baseline``; ``None`` for the baseline itself."""
    plain = {schedule(variant(runs[baseline]["settings"])): baseline}
    for path, run in runs.items():
        parts = variant(run["settings"])
        if not options(parts):
            plain.setdefault(schedule(parts), path)
    chosen = {}
    for path, run in runs.items():
        if path.resolve() == baseline.resolve():
            chosen[path] = None
            continue
        same = plain.get(schedule(variant(run["settings"])))
        chosen[path] = same if same is not None and same != path else baseline
    return chosen


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of ``a - b`` over the same images and its standard error (nats)."""
    gap = np.asarray(a) - np.asarray(b)
    return float(gap.mean()), float(gap.std(ddof=1) / math.sqrt(len(gap)))


def difference(run: dict, base: dict) -> tuple[float, float, bool]:
    """run − baseline NLL in nats, its standard error, and whether it was paired over images."""
    a, b = run["evaluation"], base["evaluation"]
    if ("nll_per_image_nats" in a and "nll_per_image_nats" in b
            and len(a["nll_per_image_nats"]) == len(b["nll_per_image_nats"])):
        return (*paired_difference(a["nll_per_image_nats"], b["nll_per_image_nats"]), True)
    return (a["nll_nats"] - b["nll_nats"],
            math.hypot(a["nll_stderr"] or 0.0, b["nll_stderr"] or 0.0), False)


def full_test_result(path: Path) -> dict | None:
    """The full-test-set evaluation beside ``burda_nll_<name>.json``, if one was made."""
    full = path.with_name(path.name.replace("burda_nll_", FULL_TEST_PREFIX, 1))
    return json.loads(full.read_text())["evaluation"] if full.exists() else None


def nll_text(evaluation: dict | None) -> str:
    return "" if evaluation is None else (f"{evaluation['nll_nats']:.2f} ± "
                                          f"{evaluation['nll_stderr']:.2f}")


def table(files: list[Path], baseline: Path) -> str:
    base = json.loads(baseline.read_text())
    runs = {path: json.loads(path.read_text()) for path in files}
    runs.setdefault(baseline, base)
    reference_of = references(runs, baseline)
    lines = [f"| run | epochs | minutes | test NLL (nats, {base['evaluation']['test_images']:,} "
             "images) | vs the VAE of the same schedule | all test images (vs the same VAE) | goal "
             "| met |",
             "|---|---:|---:|---|---|---|---|---|"]
    for path in files:
        run = runs[path]
        parts = variant(run["settings"])
        name = ", ".join(parts.values()) or "VAE"
        training, evaluation = run.get("training") or {}, run["evaluation"]
        full = full_test_result(path)
        text, threshold, kind = goal(parts, base["paper_nll_nats"])
        reference = reference_of[path]
        if reference is None:
            delta, met = "(baseline)", ""
        else:
            d, se, paired = difference(run, runs[reference])
            delta = f"{d:+.2f} ± {se:.2f}" + (" (paired)" if paired else "")
            if reference.resolve() != baseline.resolve():
                delta += f" vs `{reference.name}`"
            elif schedule(parts) != schedule(variant(runs[reference]["settings"])):
                # The plain VAE of a schedule is that schedule's reference; it shows what the
                # schedule alone gains.
                delta += (" vs the VAE without this schedule" if not options(parts)
                          else " vs the plain VAE (none trained on this schedule)")
            met = "" if threshold is None else judge(kind, threshold, d, full)
        epochs = training.get("epochs", "")
        minutes = training.get("train_minutes")
        full_text = nll_text(full)
        reference_full = None if reference is None else full_test_result(reference)
        if full is not None and reference_full is not None:
            d, se, paired = difference({"evaluation": full}, {"evaluation": reference_full})
            full_text += f" ({d:+.2f} ± {se:.2f}" + (", paired)" if paired else ")")
        lines.append(f"| {name} (`{path.name}`) | {epochs} | "
                     f"{'' if minutes is None else f'{minutes:.0f}'} | {nll_text(evaluation)} | "
                     f"{delta} | {full_text} | {text} | {met} |")
    return "\n".join(lines)


def judge(kind: str, threshold: float, delta: float, full: dict | None) -> str:
    """'yes' / '**no**' for a row's goal; a goal against the paper needs the full test set."""
    if kind == "delta":
        value = delta
    elif full is None:
        return f"not judged: needs `{FULL_TEST_PREFIX}<name>.json` (all test images)"
    else:
        value = full["nll_nats"]
    return "yes" if value <= threshold else "**no**"


def best_against_paper(files: list[Path], paper_nll: float) -> str:
    """One line: the run with the lowest NLL on all test images against the paper's VAE (the
    issue's last row asks for the best of what tfvae has, in one hour)."""
    evaluated = [(full["nll_nats"], full["nll_stderr"], path) for path in files
                 if (full := full_test_result(path)) is not None]
    if not evaluated:
        return (f"Best run against the paper's {paper_nll}: not judged, no "
                f"`{FULL_TEST_PREFIX}<name>.json` (all test images) yet.")
    nll, stderr, path = min(evaluated)
    name = ", ".join(variant(json.loads(path.read_text())["settings"]).values()) or "VAE"
    met = "yes" if nll <= paper_nll else "**no**"
    return (f"Best run on all test images: {name} (`{path.name}`), {nll:.2f} ± {stderr:.2f} "
            f"nats; ≤ {paper_nll} (the paper's 3,280-epoch VAE) in one hour: {met}.")


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="*", type=Path,
                   help="burda_nll.py result files (default: results/burda_nll_*.json)")
    p.add_argument("--baseline", type=Path, default=RESULTS / "burda_nll_baseline.json",
                   help="the plain VAE's result on the same split and test images")
    args = p.parse_args(argv)
    files = args.files or sorted(RESULTS.glob("burda_nll_*.json"))
    if not args.baseline.exists():
        raise SystemExit(f"{args.baseline} does not exist: run burda_nll.py --out {args.baseline} "
                         f"first (the plain VAE every variant is compared with).")
    paper_nll = json.loads(args.baseline.read_text())["paper_nll_nats"]
    text = table(files, args.baseline) + "\n\n" + best_against_paper(files, paper_nll)
    print(text)
    return text


if __name__ == "__main__":
    main()
