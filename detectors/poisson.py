"""Tail probabilities of counts, without SciPy."""

from __future__ import annotations

import math

__all__ = ["poisson_sf"]


def _lower_regularized_gamma(a: float, x: float) -> float:
    """P(a, x), the regularized lower incomplete gamma function (Numerical Recipes 6.2)."""
    if x <= 0:
        return 0.0
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(500):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return total * math.exp(-x + a * math.log(x) - math.lgamma(a))
    # continued fraction for Q = 1 - P
    b = x + 1 - a
    c = 1e300
    d = 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return 1.0 - math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def poisson_sf(k: float, mu: float) -> float:
    """``P(X >= k)`` for ``X ~ Poisson(mu)``; ``k`` may be fractional (quasi-Poisson).

    >>> round(poisson_sf(0, 3.0), 6), round(poisson_sf(1, 3.0), 6), round(poisson_sf(10, 3.0), 6)
    (1.0, 0.950213, 0.001102)
    """
    if k <= 0:
        return 1.0
    if mu <= 0:
        return 0.0
    return max(0.0, min(1.0, _lower_regularized_gamma(k, mu)))
