"""benchmarks/hour_runs.py: each row is compared with the plain VAE trained the same way."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "hour_runs.py"


@pytest.fixture(scope="module")
def hour_runs():
    spec = importlib.util.spec_from_file_location("hour_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(folder: Path, name: str, per_image: list[float], **settings: str) -> Path:
    path = folder / f"burda_nll_{name}.json"
    path.write_text(json.dumps({
        "paper_nll_nats": 86.76,
        "settings": {"objective": "elbo", "prior": "standard_normal", "iaf_steps": "0",
                     "free_bits": "0.0", "prior_components": "500", **settings},
        "training": {"epochs": 10, "train_minutes": 60.0},
        "evaluation": {"test_images": len(per_image), "nll_nats": sum(per_image) / len(per_image),
                       "nll_stderr": 0.1, "nll_per_image_nats": per_image},
    }))
    return path


def row(text: str, file_name: str) -> list[str]:
    line = next(line for line in text.splitlines() if f"`{file_name}`" in line.split("|")[1])
    return [cell.strip() for cell in line.split("|")[1:-1]]


def test_a_warm_up_run_is_compared_with_the_standard_prior_of_the_same_warm_up(hour_runs, tmp_path):
    baseline = write_run(tmp_path, "baseline", [90.0, 92.0, 94.0])
    warm = write_run(tmp_path, "warm", [88.0, 90.0, 92.0], kl_warmup="100")
    vamp_warm = write_run(tmp_path, "vamp_warm", [87.5, 89.0, 91.5], prior="vamp",
                          kl_warmup="100")
    iwae = write_run(tmp_path, "iwae", [89.0, 91.0, 93.5], objective="iwae", train_k="5")
    text = hour_runs.table([baseline, iwae, vamp_warm, warm], baseline)

    vamp = row(text, vamp_warm.name)
    # Against the warm-up VAE: mean of (-0.5, -1.0, -0.5) = -0.67, not -2.67 against the baseline.
    assert vamp[4].startswith("-0.67 ± ") and f"vs `{warm.name}`" in vamp[4]
    assert vamp[6] == "≥ 1 nat better than the standard prior" and vamp[7] == "**no**"
    # The warm-up VAE itself and every run without a warm-up are compared with the baseline.
    assert row(text, warm.name)[4].startswith("-2.00 ± ") and "vs `" not in row(text, warm.name)[4]
    assert row(text, warm.name)[4].endswith("vs the VAE without this schedule")
    assert row(text, iwae.name)[4].startswith("-0.83 ± ") and row(text, iwae.name)[7] == "yes"
    assert row(text, baseline.name)[4] == "(baseline)"


def test_without_a_warm_up_vae_the_warm_up_run_falls_back_to_the_baseline(hour_runs, tmp_path):
    baseline = write_run(tmp_path, "baseline", [90.0, 92.0, 94.0])
    vamp_warm = write_run(tmp_path, "vamp_warm", [88.5, 90.5, 92.5], prior="vamp",
                          kl_warmup="100")
    vamp = row(hour_runs.table([baseline, vamp_warm], baseline), vamp_warm.name)
    assert vamp[4].startswith("-1.50 ± ") and "vs `" not in vamp[4] and vamp[7] == "yes"
    assert vamp[4].endswith("vs the plain VAE (none trained on this schedule)")


def test_the_best_run_on_all_test_images_is_judged_against_the_paper(hour_runs, tmp_path):
    baseline = write_run(tmp_path, "baseline", [90.0, 92.0, 94.0])
    iwae = write_run(tmp_path, "iwae", [89.0, 91.0, 93.5], objective="iwae", train_k="5")
    vamp = write_run(tmp_path, "vamp", [88.0, 90.0, 92.0], prior="vamp", kl_warmup="100")
    assert "not judged" in hour_runs.best_against_paper([baseline, iwae, vamp], 86.76)
    for path, nll in ((iwae, 87.10), (vamp, 86.50)):
        full = path.with_name(path.name.replace("burda_nll_", "burda_full_test_"))
        full.write_text(json.dumps({"evaluation": {"nll_nats": nll, "nll_stderr": 0.2}}))
    line = hour_runs.best_against_paper([baseline, iwae, vamp], 86.76)
    assert f"`{vamp.name}`), 86.50 ± 0.20" in line and line.endswith("yes.")
    assert hour_runs.best_against_paper([baseline, iwae], 86.76).endswith("**no**.")


def test_full_test_evaluations_of_a_run_and_its_reference_are_compared_paired(hour_runs, tmp_path):
    baseline = write_run(tmp_path, "baseline", [90.0, 92.0, 94.0])
    warm = write_run(tmp_path, "warm", [88.0, 90.0, 92.0], kl_warmup="100")
    vamp_warm = write_run(tmp_path, "vamp_warm", [87.5, 89.0, 91.5], prior="vamp",
                          kl_warmup="100")
    full_test = {warm: [89.0, 91.0, 93.0, 95.0], vamp_warm: [88.0, 89.0, 92.0, 94.0]}
    for path, per_image in full_test.items():
        full = path.with_name(path.name.replace("burda_nll_", "burda_full_test_"))
        full.write_text(json.dumps({"evaluation": {
            "nll_nats": sum(per_image) / 4, "nll_stderr": 0.5, "nll_per_image_nats": per_image}}))
    text = hour_runs.table([baseline, warm, vamp_warm], baseline)
    # (-1, -2, -1, -1): mean -1.25, standard error 0.25; the baseline has no full-test file.
    assert row(text, vamp_warm.name)[5] == "90.75 ± 0.50 (-1.25 ± 0.25, paired)"
    assert row(text, warm.name)[5] == "92.00 ± 0.50"
