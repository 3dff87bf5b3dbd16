"""Maximise the Bayesian linear-regression log evidence over (alpha, beta), many targets at once.

The model of LogME (You et al., ICML 2021, eq. 2-4; JMLR 2022): for one target column
``y: float[n]`` and features ``F: float[n, d]``,

    w ~ N(0, alpha^-1 I_d),    y | F, w ~ N(F w, beta^-1 I_n),

    L(alpha, beta) = log p(y | F, alpha, beta)
                   = d/2 log(alpha) + n/2 log(beta) - n/2 log(2 pi)
                     - beta/2 ||y - F m||^2 - alpha/2 ||m||^2 - 1/2 log|A|,
    A = alpha I + beta F^T F,    m = beta A^-1 F^T y.

With ``lam = alpha / beta``, the eigenvalues ``sigma_i`` of ``F^T F`` (all ``d`` of them, zeros
included) and ``z = V^T F^T y`` in its eigenbasis:

    R(lam) = ||y - F m||^2 + lam ||m||^2 = y^T y - sum_i z_i^2 / (lam + sigma_i)
    L = n/2 log(beta) - beta/2 R(lam) + d/2 log(lam) - 1/2 sum_i log(lam + sigma_i) - n/2 log(2 pi)

The maximum over ``beta`` is ``beta = n / R(lam)``, which leaves a one-dimensional profile in
``t = log(lam)``:

    L*(t) = n/2 (log n - 1 - log 2 pi) - n/2 log R - 1/2 sum_{sigma_i > 0} log(1 + sigma_i / lam)

(the ``d - k`` zero eigenvalues cancel ``d/2 log(lam)`` exactly, which is the term the original
code drops when ``n <= d``). With ``q_i = lam / (lam + sigma_i) = expit(t - log sigma_i)``,
``p_i = 1 - q_i``, ``w_i = z_i^2 / sigma_i`` and ``r0 = y^T y - sum_i w_i`` (the least-squares
residual):

    R      = r0 + sum_i w_i q_i                       (a sum of non-negative terms)
    dR/dt  = sum_i w_i q_i p_i                        (= lam ||m||^2)
    gamma  = sum_i p_i                                (effective number of parameters)
    dL*/dt = gamma / 2 - n/2 (dR/dt) / R

``dL*/dt = 0`` is the fixed point ``alpha = gamma / ||m||^2``, ``beta = (n - gamma) / ||y - F m||^2``
of the paper, but solved here by safeguarded Newton on ``dL*/dt`` inside brackets found on a
grid in ``t``: every step costs O(k) per target and is vectorised over all targets, and it
converges in a handful of steps where the fixed-point iteration needs thousands.

Limits (what is returned at the boundary of the ``t`` line):

* ``lam -> inf`` (``alpha / beta -> inf``, ``m -> 0``): ``L* -> const - n/2 log(y^T y)``. Features
  that carry no signal for a target reach their supremum here; we return that limit, with
  ``alpha = inf``, ``beta = n / y^T y``.
* ``lam -> 0`` with ``r0 > 0``: ``L* -> -inf`` (never the maximum).
* ``lam -> 0`` with ``r0 = 0``, which happens exactly when the features have rank ``n`` (e.g.
  ``n <= d``): ``L*`` tends to a finite limit; when it is the supremum we return it with
  ``alpha = n / sum_i w_i / sigma_i`` and ``beta = inf``.
* ``r0`` is a difference of sufficient statistics; when it cancels to (numerically) zero with
  ``k < n`` (a target that is an exact linear function of the features), the evidence is
  unbounded. The caller floors ``r0`` (see :data:`RESIDUAL_FLOOR`), so such targets get a large
  but finite score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

logger = logging.getLogger(__name__)

#: ``r0`` is floored at ``RESIDUAL_FLOOR * k * eps * y^T y`` when ``k < n`` (see module docstring).
RESIDUAL_FLOOR = 4.0
#: Grid spacing in ``t = log(alpha / beta)`` used to bracket the stationary points.
GRID_STEP = 0.125
#: How far (in ``t``) the grid extends beyond the log-eigenvalue range.
GRID_MARGIN = 16.0
#: Newton stops when the step in ``t`` is below ``T_TOL * (1 + |t|)``.
T_TOL = 1e-13
MAX_NEWTON_STEPS = 200
#: Beyond the grid, stationary points are searched this far (in ``t``); further out ``L*``
#: differs from its limit by less than ``n exp(-TAIL_SEARCH)``.
TAIL_SEARCH = 64.0

INTERIOR = 0
LAMBDA_INF = 1
LAMBDA_ZERO = -1


@dataclass(frozen=True)
class EvidenceMaxima:
    """Per-target maxima of the log evidence; every array is ``[t]``.

    ``log_evidence`` is ``L*`` (not divided by ``n``); ``lam = alpha / beta``; ``boundary`` is
    :data:`INTERIOR`, :data:`LAMBDA_INF` or :data:`LAMBDA_ZERO`; ``iterations`` counts the Newton /
    bisection steps spent on the bracket of the returned maximum (0 at a boundary).
    """

    log_evidence: np.ndarray
    lam: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    iterations: np.ndarray
    boundary: np.ndarray


def spectral_weights(
    eigenvalues: np.ndarray,
    projections: np.ndarray,
    y_sq: np.ndarray,
    num_samples: int,
    zero_tolerance_scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From an eigendecomposition of ``F^T F`` to the inputs of :func:`maximise_log_evidence`.

    ``eigenvalues: float64[m]`` (any order, may include numerical zeros or tiny negatives) and
    ``projections: float64[m, t]`` (``z = V^T F^T Y``). Eigenvalues at or below
    ``m_max * eps * max(eigenvalues)`` (with ``m_max = max(n, m)`` or ``zero_tolerance_scale``)
    are treated as exact zeros, and their projections (zero in exact arithmetic) are dropped.

    Returns ``(sigma: float64[k] > 0, w: float64[k, t] = z^2 / sigma, r0: float64[t])``.
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    projections = np.asarray(projections, dtype=np.float64)
    keep = _nonzero_eigenvalues(eigenvalues, num_samples, zero_tolerance_scale)
    sigma = eigenvalues[keep]
    weights = projections[keep] ** 2 / sigma[:, None]
    residual = np.asarray(y_sq, dtype=np.float64) - weights.sum(axis=0)
    return sigma, weights, floor_residual(residual, y_sq, sigma.size, num_samples)


def spectral_weights_from_rows(
    eigenvalues: np.ndarray,
    row_projections: np.ndarray,
    y_sq: np.ndarray,
    num_samples: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`spectral_weights`, from an eigendecomposition of the ``n x n`` Gram ``F F^T``.

    ``eigenvalues: float64[n]``, ``row_projections: float64[n, t] = U^T Y`` with ``U`` all ``n``
    eigenvectors. The nonzero eigenvalues of ``F F^T`` are those of ``F^T F``; ``z_i^2 / sigma_i =
    (u_i^T y)^2``, and the least-squares residual is the energy of ``y`` on the null
    eigenvectors, ``r0 = sum_{sigma_i = 0} (u_i^T y)^2``, which needs no cancellation.
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    row_projections = np.asarray(row_projections, dtype=np.float64)
    keep = _nonzero_eigenvalues(eigenvalues, num_samples, None)
    sigma = eigenvalues[keep]
    weights = row_projections[keep] ** 2
    residual = (row_projections[~keep] ** 2).sum(axis=0)
    return sigma, weights, floor_residual(residual, y_sq, sigma.size, num_samples)


def floor_residual(
    residual: np.ndarray, y_sq: np.ndarray, rank: int, num_samples: int
) -> np.ndarray:
    """``r0`` is exactly 0 when ``rank == n``; otherwise at least ``RESIDUAL_FLOOR * k * eps * y^T y``."""
    residual = np.asarray(residual, dtype=np.float64).copy()
    y_sq = np.asarray(y_sq, dtype=np.float64)
    if rank >= num_samples:
        return np.zeros_like(residual)
    floor = RESIDUAL_FLOOR * max(rank, 1) * np.finfo(np.float64).eps * y_sq
    floored = residual < floor
    if floored.any():
        logger.warning(
            "%d target column(s) are numerically exact linear functions of the features "
            "(least-squares residual below %.1e of y^T y): their evidence is unbounded and is "
            "reported at the residual floor",
            int(floored.sum()),
            RESIDUAL_FLOOR * max(rank, 1) * np.finfo(np.float64).eps,
        )
        residual[floored] = floor[floored]
    return residual


def _nonzero_eigenvalues(
    eigenvalues: np.ndarray, num_samples: int, zero_tolerance_scale: float | None
) -> np.ndarray:
    if eigenvalues.size == 0:
        return np.zeros(0, dtype=bool)
    top = float(eigenvalues.max())
    if not top > 0:
        return np.zeros(eigenvalues.shape, dtype=bool)
    scale = zero_tolerance_scale or max(num_samples, eigenvalues.size)
    return eigenvalues > scale * np.finfo(np.float64).eps * top


def maximise_log_evidence(
    sigma: np.ndarray,
    weights: np.ndarray,
    residual: np.ndarray,
    num_samples: int,
) -> EvidenceMaxima:
    """Global maximum over ``(alpha, beta)`` of the log evidence, for each of ``t`` targets.

    ``sigma: float64[k] > 0`` nonzero eigenvalues of ``F^T F``; ``weights: float64[k, t]``
    (``z_i^2 / sigma_i``); ``residual: float64[t]`` (``r0 >= 0``, exactly 0 only if ``k == n``);
    ``num_samples``: ``n``. The ``d - k`` zero eigenvalues need no input: their terms cancel.

    Method: the sign of ``dL*/dt`` on a grid over ``t`` (spacing :data:`GRID_STEP`, covering the
    spectrum with :data:`GRID_MARGIN` on each side, extended until the tail signs are settled)
    brackets every local maximum; each bracket is refined by Newton steps on ``dL*/dt`` (with
    bisection as safeguard) until the step is below ``T_TOL * (1 + |t|)``; the best of those and
    the two limits ``t -> +-inf`` is returned.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    residual = np.asarray(residual, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64).reshape(sigma.size, residual.size)
    n = float(num_samples)
    num_targets = weights.shape[1]
    const = 0.5 * n * (np.log(n) - 1.0 - np.log(2.0 * np.pi))
    r_inf = residual + weights.sum(axis=0)

    # Limits at both ends of the t line.
    best_value = const - 0.5 * n * np.log(r_inf)
    best_t = np.full(num_targets, np.inf)
    best_boundary = np.full(num_targets, LAMBDA_INF, dtype=np.int8)
    best_iterations = np.zeros(num_targets, dtype=np.int64)
    if sigma.size == 0:
        return _boundary_only(best_value, r_inf, n)
    log_sigma = np.log(sigma)
    exact_fit = residual <= 0.0
    if exact_fit.any():
        # lam -> 0 with r0 = 0 (rank n): R ~ lam sum w / sigma, and the log terms balance.
        c1 = (weights[:, exact_fit] / sigma[:, None]).sum(axis=0)
        low_value = const - 0.5 * n * np.log(c1) - 0.5 * log_sigma.sum()
        better = low_value > best_value[exact_fit]
        idx = np.flatnonzero(exact_fit)[better]
        best_value[idx] = low_value[better]
        best_t[idx] = -np.inf
        best_boundary[idx] = LAMBDA_ZERO

    # Brackets [a, b] with dL*/dt(a) > 0 >= dL*/dt(b) on a grid, per target.
    grid = _grid(log_sigma, weights, residual, n)
    slope = _grid_slopes(grid, log_sigma, weights, residual, n)  # [G, t]
    rising = slope[:-1] > 0
    falling = slope[1:] <= 0
    pair_grid, pair_target = np.nonzero(rising & falling)
    lower = grid[pair_grid]
    upper = grid[pair_grid + 1]
    lower_g = slope[pair_grid, pair_target]
    upper_g = slope[pair_grid + 1, pair_target]

    # Tails: a target still rising at the top of the grid, or (with r0 > 0, where L* -> -inf as
    # t -> -inf) already falling at its bottom, has a stationary point beyond the grid.
    tails = [
        _tail_bracket(grid[-1], +1.0, slope[-1] > 0, log_sigma, weights, residual, n),
        _tail_bracket(
            grid[0], -1.0, (slope[0] <= 0) & (residual > 0), log_sigma, weights, residual, n
        ),
    ]
    for tail_lower, tail_upper, tail_lower_g, tail_upper_g, tail_target in tails:
        lower = np.concatenate([lower, tail_lower])
        upper = np.concatenate([upper, tail_upper])
        lower_g = np.concatenate([lower_g, tail_lower_g])
        upper_g = np.concatenate([upper_g, tail_upper_g])
        pair_target = np.concatenate([pair_target, tail_target])

    if pair_target.size:
        t_star, iterations = _refine(
            lower, upper, lower_g, upper_g, pair_target, log_sigma, weights, residual, n
        )
        value, _, _, _ = _profile(t_star, pair_target, log_sigma, weights, residual, n)
        value = value + const
        # Keep, per target, the best candidate (ties go to the interior point).
        order = np.lexsort((-value, pair_target))
        first = np.ones(order.size, dtype=bool)
        first[1:] = pair_target[order][1:] != pair_target[order][:-1]
        top = order[first]
        targets = pair_target[top]
        better = value[top] >= best_value[targets]
        targets = targets[better]
        top = top[better]
        best_value[targets] = value[top]
        best_t[targets] = t_star[top]
        best_boundary[targets] = INTERIOR
        best_iterations[targets] = iterations[top]

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lam = np.exp(best_t)
        r_at_best = residual + _weighted_q(best_t, log_sigma, weights)
        beta = n / r_at_best
        alpha = lam * beta
    at_inf = best_boundary == LAMBDA_INF
    alpha[at_inf] = np.inf
    beta[at_inf] = n / r_inf[at_inf]
    at_zero = best_boundary == LAMBDA_ZERO
    if at_zero.any():
        # lam -> 0 with r0 = 0: R ~ lam C1, so beta -> inf and alpha = lam beta -> n / C1.
        c1 = (weights[:, at_zero] / sigma[:, None]).sum(axis=0)
        alpha[at_zero] = n / c1
        beta[at_zero] = np.inf
    return EvidenceMaxima(best_value, lam, alpha, beta, best_iterations, best_boundary)


def _boundary_only(value, r_inf, n) -> EvidenceMaxima:
    size = value.size
    return EvidenceMaxima(
        log_evidence=value,
        lam=np.full(size, np.inf),
        alpha=np.full(size, np.inf),
        beta=n / r_inf,
        iterations=np.zeros(size, dtype=np.int64),
        boundary=np.full(size, LAMBDA_INF, dtype=np.int8),
    )


def _weighted_q(t: np.ndarray, log_sigma: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_i w_i q_i(t)`` per target (``t: [t]``; infinite ``t`` allowed)."""
    q = expit(t[None, :] - log_sigma[:, None])
    return (weights * q).sum(axis=0)


def _grid(log_sigma: np.ndarray, weights: np.ndarray, residual: np.ndarray, n: float):
    low = log_sigma.min() - GRID_MARGIN
    high = log_sigma.max() + GRID_MARGIN
    # With r0 > 0, small lam gives dL*/dt ~ k/2 - n/2 lam C1 / (r0 + lam C1): a root near
    # lam = r0 k / (C1 (n - k)), which is far below the spectrum when r0 is tiny.
    k = log_sigma.size
    if n > k:
        positive = residual > 0
        if positive.any():
            c1 = (weights[:, positive] / np.exp(log_sigma)[:, None]).sum(axis=0)
            with np.errstate(divide="ignore"):
                estimate = np.log(residual[positive] * k / (c1 * (n - k)))
            estimate = estimate[np.isfinite(estimate)]
            if estimate.size:
                low = min(low, float(estimate.min()) - 4.0 - np.log(n))
    num = int(np.ceil((high - low) / GRID_STEP)) + 1
    return np.linspace(low, high, num)


def _grid_slopes(grid, log_sigma, weights, residual, n) -> np.ndarray:
    """``dL*/dt`` at every grid point for every target: ``[G, t]``, via two matrix products."""
    x = log_sigma[None, :] - grid[:, None]  # [G, k]
    p = expit(x)
    q = expit(-x)
    gamma = p.sum(axis=1)  # [G]
    r = residual[None, :] + q @ weights  # [G, t]
    r_t = (q * p) @ weights
    return 0.5 * gamma[:, None] - 0.5 * n * r_t / r


def _profile(t, target, log_sigma, weights, residual, n):
    """``L* - const``, ``dL*/dt``, ``d2L*/dt2`` and ``R`` at points ``t: [P]`` of targets ``target: [P]``."""
    x = log_sigma[:, None] - t[None, :]  # [k, P]
    p = expit(x)
    q = expit(-x)
    w = weights[:, target]
    wq = w * q
    r = residual[target] + wq.sum(axis=0)
    wqp = wq * p
    r_t = wqp.sum(axis=0)
    r_tt = (wqp * (p - q)).sum(axis=0)
    qp = q * p
    slope = 0.5 * p.sum(axis=0) - 0.5 * n * r_t / r
    curvature = -0.5 * qp.sum(axis=0) - 0.5 * n * (r_tt / r - (r_t / r) ** 2)
    value = -0.5 * n * np.log(r) - 0.5 * np.logaddexp(0.0, x).sum(axis=0)
    return value, slope, curvature, r


def _tail_bracket(edge, direction, needs, log_sigma, weights, residual, n):
    """Brackets beyond the grid edge for the targets flagged in ``needs``, by doubling steps."""
    targets = np.flatnonzero(needs)
    empty = np.zeros(0)
    if targets.size == 0:
        return empty, empty, empty, empty, targets
    near = np.full(targets.size, edge)
    near_g = _profile(near, targets, log_sigma, weights, residual, n)[1]
    found_t = np.full(targets.size, np.nan)
    found_g = np.full(targets.size, np.nan)
    active = np.ones(targets.size, dtype=bool)
    step = 4.0
    while active.any() and step <= TAIL_SEARCH:
        far = edge + direction * step
        idx = np.flatnonzero(active)
        far_g = _profile(np.full(idx.size, far), targets[idx], log_sigma, weights, residual, n)[1]
        # Upward we look for the slope turning <= 0; downward for it turning > 0.
        done = far_g <= 0 if direction > 0 else far_g > 0
        found_t[idx[done]] = far
        found_g[idx[done]] = far_g[done]
        # The last point on the near side tightens the bracket.
        near[idx[~done]] = far
        near_g[idx[~done]] = far_g[~done]
        active[idx[done]] = False
        step *= 2.0
    ok = ~active
    targets = targets[ok]
    if direction > 0:
        return near[ok], found_t[ok], near_g[ok], found_g[ok], targets
    return found_t[ok], near[ok], found_g[ok], near_g[ok], targets


def _refine(lower, upper, lower_g, upper_g, target, log_sigma, weights, residual, n):
    """Safeguarded Newton on ``dL*/dt`` in brackets with ``g(lower) > 0 >= g(upper)``."""
    lower = lower.astype(np.float64).copy()
    upper = upper.astype(np.float64).copy()
    # Start from the secant (regula falsi) point of the bracket.
    t = lower + (upper - lower) * lower_g / (lower_g - upper_g)
    t = np.where(np.isfinite(t), t, 0.5 * (lower + upper))
    iterations = np.zeros(t.size, dtype=np.int64)
    active = np.ones(t.size, dtype=bool)
    for _ in range(MAX_NEWTON_STEPS):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        ti = t[idx]
        _, slope, curvature, _ = _profile(ti, target[idx], log_sigma, weights, residual, n)
        iterations[idx] += 1
        rising = slope > 0
        lower[idx] = np.where(rising, ti, lower[idx])
        upper[idx] = np.where(rising, upper[idx], ti)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = ti - slope / curvature
        lo, hi = lower[idx], upper[idx]
        tol = T_TOL * (1.0 + np.abs(ti))
        # A Newton step below tolerance means converged, even if rounding puts it a hair outside
        # the bracket (bisecting a bracket whose other end is a far grid point would be slow).
        converged = (slope == 0) | ((curvature < 0) & (np.abs(newton - ti) <= tol))
        safe = (curvature < 0) & (newton > lo) & (newton < hi) & np.isfinite(newton)
        t_new = np.where(safe, newton, 0.5 * (lo + hi))
        t_new = np.where(converged, np.clip(newton, lo, hi), t_new)
        t_new = np.where(slope == 0, ti, t_new)
        done = converged | (np.abs(t_new - ti) <= tol) | (hi - lo <= tol)
        t[idx] = t_new
        active[idx[done]] = False
    if active.any():
        logger.warning(
            "LogME evidence maximisation: %d bracket(s) not converged after %d steps",
            int(active.sum()),
            MAX_NEWTON_STEPS,
        )
    return t, iterations
