"""The report's intervals after moving to scipy: Wilson from scipy.stats.binomtest equals the
closed form atelier computed before (Wilson 1927) at every count the loop can produce; Newcombe's
difference interval (kept by hand: scipy has none) on textbook values."""

import math

import pytest

from atelier.stats.intervals import difference_ci, share, wilson_interval


def closed_form_wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """atelier's hand-written Wilson interval before scipy took it over."""
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.mark.parametrize("total", [1, 2, 3, 7, 8, 40, 320, 640, 1000])
def test_scipy_wilson_equals_the_closed_form(total):
    for successes in range(total + 1):
        got, want = wilson_interval(successes, total), closed_form_wilson(successes, total)
        assert got == pytest.approx(want, abs=1e-12), (successes, total)


def test_wilson_at_another_z_and_its_errors():
    assert wilson_interval(3, 10, z=2.576) == pytest.approx(closed_form_wilson(3, 10, 2.576), abs=1e-12)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    assert share(0, 0) == {"value": None, "ci95": None, "n": 0}


def test_newcombe_difference_on_newcombes_example():
    # Newcombe (1998), Table II example (e): 56/70 vs 48/80, method 10: [0.0524, 0.3339]
    got = difference_ci(share(56, 70), share(48, 80))
    assert got["value"] == pytest.approx(0.2)
    assert got["ci95"] == pytest.approx([0.0524, 0.3339], abs=5e-4)
