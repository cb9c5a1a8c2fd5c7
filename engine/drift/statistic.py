"""The two-sample test: squared MMD with a Gaussian kernel on embeddings, and its permutation p-value.

The maximum mean discrepancy (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012) is the distance between
the mean embeddings of two samples in the kernel's feature space; its unbiased estimate is

    MMD² = mean k(x, x') over pairs of incoming + mean k(y, y') over pairs of reference - 2 mean k(x, y),

with k(a, b) = exp(-|a - b|² / (2 σ²)) and σ the median distance between all the prompts pooled (the median
heuristic, fixed before permuting). Under "the same distribution" the statistic is near 0 (it can be negative).
How far from 0 is far is not a fixed number (it depends on the sample sizes and the embeddings), so it is
calibrated on the data: the prompts are pooled and split at random ``permutations`` times
(``scipy.stats.permutation_test``; every split, when there are no more). The p-value is the share of splits at
least as far apart (with scipy's +1 correction for random splits; exact when every split is tested); drifted
means p-value <= significance: the split between incoming and reference is one that random splits rarely match.
The threshold is the split statistic that decision flips at (about the null's (1 - significance) quantile, taken
by the same count as the p-value), so drifted also means statistic > threshold.

The kernel matrix is computed once; each random split then costs one product with it (a batch of splits, one
matrix product).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import stats

from engine.drift.report import MovedPrompt, TwoSampleTest

Matrix = npt.NDArray[np.float64]


def _squared_distances(z: Matrix) -> Matrix:
    norms = np.einsum("ij,ij->i", z, z)
    d2 = norms[:, None] + norms[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    out: Matrix = np.asarray(d2, dtype=np.float64)
    return out


def gaussian_kernel(z: Matrix) -> Matrix:
    """exp(-d² / (2 σ²)) between every pair of rows, σ the median distance (1 when all rows are equal)."""
    d2 = _squared_distances(z)
    off = d2[~np.eye(len(z), dtype=bool)]
    positive = off[off > 0]
    sigma2 = float(np.median(positive)) if positive.size else 1.0
    kernel: Matrix = np.exp(-d2 / (2.0 * sigma2))
    return kernel


def mmd2(kernel: Matrix, n: int) -> float:
    """The unbiased MMD² of the first ``n`` rows against the rest."""
    m = len(kernel) - n
    kxx = kernel[:n, :n].sum() - np.trace(kernel[:n, :n])
    kyy = kernel[n:, n:].sum() - np.trace(kernel[n:, n:])
    kxy = kernel[:n, n:].sum()
    return float(kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m))


def two_sample_test(incoming: Matrix, reference: Matrix, *, permutations: int, significance: float, seed: int,
                    incoming_texts: tuple[str, ...] = (), reference_texts: tuple[str, ...] = (),
                    moved: int = 0) -> TwoSampleTest:
    """MMD² of ``incoming`` against ``reference`` (rows are embeddings), its permutation threshold and p-value,
    and the ``moved`` incoming texts farthest from any reference text."""
    n, m = len(incoming), len(reference)
    if n < 2 or m < 2:
        raise ValueError(f"the test needs two rows on each side, got {n} and {m}")
    z = np.concatenate([incoming, reference]).astype(np.float64)
    kernel = gaussian_kernel(z)
    total = kernel.sum()
    diagonal = np.diag(kernel)

    def statistic(x: npt.NDArray[np.int64], y: npt.NDArray[np.int64], axis: int = -1) -> npt.NDArray[np.float64]:
        # x: indices of the rows on the incoming side, shape (..., n); y: the rest (..., m).
        x = np.moveaxis(np.asarray(x), axis, -1).astype(np.intp)
        batch = x.reshape(-1, n)
        inside = np.zeros((len(batch), n + m))
        np.put_along_axis(inside, batch, 1.0, axis=1)
        weighted = inside @ kernel  # row b: sum of k(i, j) over the incoming side's i, for every j
        kxx_all = np.einsum("bj,bj->b", weighted, inside)
        kxy = weighted.sum(axis=1) - kxx_all
        kyy_all = total - kxx_all - 2.0 * kxy
        d_x = inside @ diagonal
        d_y = diagonal.sum() - d_x
        value = (kxx_all - d_x) / (n * (n - 1)) + (kyy_all - d_y) / (m * (m - 1)) - 2.0 * kxy / (n * m)
        out: npt.NDArray[np.float64] = value.reshape(x.shape[:-1])
        return out

    result = stats.permutation_test(
        (np.arange(n), np.arange(n, n + m)), statistic, permutation_type="independent", vectorized=True,
        n_resamples=permutations, alternative="greater", rng=np.random.default_rng(seed), batch=64,
    )
    null = np.asarray(result.null_distribution, dtype=np.float64)
    # The statistic the p-value was counted against (the null's own function: mmd2 up to rounding).
    value, p_value = float(result.statistic), float(result.pvalue)
    # scipy tests every split when there are no more than ``permutations`` of them (the p-value is then exact: no
    # +1, the real split is one of them), else ``permutations`` random ones (+1 on both sides of the share).
    exact = permutations >= math.comb(n + m, n)
    return TwoSampleTest(
        statistic=value,
        threshold=decision_threshold(null, value, p_value <= significance, significance=significance,
                                     adjustment=0 if exact else 1),
        p_value=p_value,
        permutations=len(null),
        moved=farthest(incoming, reference, incoming_texts, reference_texts, moved) if moved else (),
    )


def decision_threshold(null: npt.NDArray[np.float64], observed: float, drifted: bool, *, significance: float,
                       adjustment: int) -> float:
    """The null statistic the decision flips at: ``observed`` over it is drifted, at or under it is not.

    The p-value is (k + adjustment) / (N + adjustment), k of the N null statistics at least ``observed``; drifted
    means p-value <= significance, so k at most K, the largest count whose p-value (computed as scipy computes it)
    is at most the significance: ``observed`` must be over the (K + 1)-th largest null statistic. +inf when no
    count gives one that small (too few splits for the significance: nothing can drift), -inf when every one does.
    scipy counts a null statistic within a relative 100 ulp of ``observed`` as equal to it; a split that close to
    the threshold is not drifted and its threshold is ``observed`` itself, so "statistic > threshold" and
    "p-value <= significance" always say the same."""
    total = len(null) + adjustment
    allowed = min(max(math.floor(significance * total) - adjustment, -1), len(null))
    while allowed < len(null) and (allowed + 1 + adjustment) / total <= significance:
        allowed += 1
    while allowed >= 0 and (allowed + adjustment) / total > significance:
        allowed -= 1
    if allowed < 0:
        return math.inf
    if allowed >= len(null):
        return -math.inf
    flip = float(-np.partition(-null, allowed)[allowed])  # the (allowed + 1)-th largest
    return flip if drifted else max(flip, observed)


def farthest(incoming: Matrix, reference: Matrix, incoming_texts: tuple[str, ...], reference_texts: tuple[str, ...],
             count: int) -> tuple[MovedPrompt, ...]:
    """The ``count`` incoming texts whose embeddings are farthest from their nearest reference embedding."""
    d2 = (np.einsum("ij,ij->i", incoming, incoming)[:, None] + np.einsum("ij,ij->i", reference, reference)[None, :]
          - 2.0 * incoming @ reference.T)
    nearest = d2.argmin(axis=1)
    distance = np.sqrt(np.maximum(d2[np.arange(len(incoming)), nearest], 0.0))
    order = sorted(range(len(incoming)), key=lambda i: (-float(distance[i]), incoming_texts[i]))[:count]
    return tuple(MovedPrompt(incoming_texts[i], round(float(distance[i]), 6), reference_texts[int(nearest[i])])
                 for i in order)
