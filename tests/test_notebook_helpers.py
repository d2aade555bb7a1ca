"""tfvae.notebook.fit_or_load: train once, then load instead of training again."""

from __future__ import annotations

import numpy as np
from helpers import small_vae

from tfvae.notebook import benchmark_results, fit_or_load


def test_fit_or_load_trains_once_then_loads_the_same_weights(binary_batch, tmp_path):
    path = tmp_path / "saved" / "vae.keras"
    vae = small_vae()
    vae.compile()
    trained, history = fit_or_load(vae, path, binary_batch, epochs=2, batch_size=8, verbose=0)
    assert trained is vae and len(history["loss"]) == 2 and path.is_file()

    fresh = small_vae(init_seed=1)
    fresh.compile()
    loaded, loaded_history = fit_or_load(fresh, path, binary_batch, epochs=2, verbose=0)
    assert loaded is not fresh and loaded_history == history
    for a, b in zip(loaded.get_weights(), vae.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(loaded.optimizer.iterations) == int(vae.optimizer.iterations)  # nothing trained

    again, _ = fit_or_load(fresh, path, binary_batch, epochs=1, batch_size=8, verbose=0,
                           reuse=False)
    assert again is fresh and int(fresh.optimizer.iterations) == 4  # 32 examples / 8, one epoch


def test_benchmark_results_are_found_from_a_subfolder(tmp_path, monkeypatch):
    results = tmp_path / "repo" / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "burda_nll_a.json").write_text('{"nll": 87.5}')
    (results / "burda_nll_b.json").write_text('{"nll": 86.0}')
    (results / "other.json").write_text("{}")
    (tmp_path / "repo" / "notebooks" / "ko").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo" / "notebooks" / "ko")
    found = benchmark_results("burda_nll*.json")
    assert list(found) == ["burda_nll_a.json", "burda_nll_b.json"]
    assert found["burda_nll_b.json"] == {"nll": 86.0}
    assert benchmark_results("missing.json") == {}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # no benchmarks/results here or above
    assert benchmark_results("*.json") == {}
