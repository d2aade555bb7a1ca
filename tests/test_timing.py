"""tfvae.timing.sampling_speed on a fake clock: which calls are timed, the median, the images."""

from __future__ import annotations

import numpy as np
import pytest

from tfvae import timing


def test_sampling_speed_times_each_round_after_an_untimed_warm_up(monkeypatch):
    calls = []

    def sample(n, seed):
        calls.append((n, seed))
        return np.full((n, 2, 2, 1), seed, np.float32)

    # perf_counter is read twice per timed round: rounds of 3 s, 1 s and 2 s.
    readings = iter([10.0, 13.0, 20.0, 21.0, 30.0, 32.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(readings))
    speed, images = timing.sampling_speed(sample, n=4, rounds=3)

    assert calls == [(2, 0), (4, 1), (4, 2), (4, 3)]  # warm-up with min(n, 2), then seeds 1..3
    assert speed["seconds_per_call"] == [3.0, 1.0, 2.0]
    assert speed["images_per_call"] == 4
    assert speed["seconds_per_image"] == pytest.approx(2.0 / 4)  # median 2 s over 4 images
    assert speed["images_per_second"] == pytest.approx(4 / 2.0)
    np.testing.assert_array_equal(images, np.full((4, 2, 2, 1), 3.0))  # the last round's
    assert isinstance(images, np.ndarray)


@pytest.mark.parametrize("n, rounds, message", [(0, 1, "n must be"), (2.0, 1, "n must be"),
                                                (1, 0, "rounds must be")])
def test_sampling_speed_refuses_bad_counts_before_sampling(n, rounds, message):
    def sample(n, seed):
        raise AssertionError("sampled despite a bad count")

    with pytest.raises(ValueError, match=message):
        timing.sampling_speed(sample, n=n, rounds=rounds)
