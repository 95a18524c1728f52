"""Summaries across seeds and methods: t intervals over training seeds, paired method differences on the
same scored rows, and per-group gap closed with a guard against tiny denominators.

Row tables are those of `plural.evaluate.predict` (see `analysis.metrics`). Every line table starts with
the overall line, `group == "all"`, followed by one line per group (sorted) when rows carry groups.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from analysis.metrics import _cols, bootstrap_ci, expected_accuracy
from plural.errors import PluralError


def _subsets(rows: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """("all", rows), then (group, that group's rows) for each non-null group, sorted."""
    yield "all", rows
    if "group" in rows.columns and rows["group"].notna().any():
        for g, r in rows.groupby("group", sort=True):
            yield str(g), r


def _t_cdf_two_sided(theta: float, dof: int) -> float:
    """P(|T| < sqrt(dof) tan(theta)) for Student's t with integer dof >= 1 (Abramowitz & Stegun 26.7.3-4)."""
    s, c = math.sin(theta), math.cos(theta)
    if dof % 2:  # odd: (2/pi) (theta + sin cos sum_k prod_{j<=k} 2j/(2j+1) cos^{2k})
        total, term = 0.0, 1.0
        for k in range((dof - 1) // 2):
            total += term
            term *= c * c * (2 * k + 2) / (2 * k + 3)
        return 2.0 / math.pi * (theta + s * c * total)
    total, term = 0.0, 1.0  # even: sin sum_k prod_{j<=k} (2j-1)/(2j) cos^{2k}
    for k in range(dof // 2):
        total += term
        term *= c * c * (2 * k + 1) / (2 * k + 2)
    return s * total


def t_quantile(p: float, dof: int) -> float:
    """The p-quantile of Student's t with integer `dof` >= 1 (exact CDF series, inverted by bisection).

    E.g. t_quantile(0.975, 2) = 4.3027. NaN for dof < 1.
    """
    if dof < 1 or not 0 < p < 1:
        return float("nan")
    if p < 0.5:
        return -t_quantile(1 - p, dof)
    target, lo, hi = 2 * p - 1, 0.0, math.pi / 2  # bisection on theta = atan(t / sqrt(dof))
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf_two_sided(mid, int(dof)) < target else (lo, mid)
    return math.sqrt(dof) * math.tan((lo + hi) / 2)


def seed_summary(df: pd.DataFrame, value_cols: Sequence[str], by: str | Sequence[str], level: float = 0.95,
                 seed_col: str = "seed") -> pd.DataFrame:
    """Mean over training seeds with a Student-t CI, one line per value of `by`.

    df: one line per (by..., seed), e.g. a grid's results.parquet. For each column v of value_cols the
    output has v (mean over the seeds where v is non-null), v_lo and v_hi (mean -/+ t_{(1+level)/2, n-1}
    * sd / sqrt(n), sd with n - 1 dof, n = non-null seeds of v; NaN when n < 2, never a zero-width
    interval), and n_seeds (lines of the group). When `seed_col` is a column, a seed repeated within
    a group is refused: `by` is then missing the column that tells those lines apart.
    Columns: *by, n_seeds, then v, v_lo, v_hi for each value column.
    """
    by = [by] if isinstance(by, str) else list(by)
    value_cols = list(value_cols)
    for c in by + value_cols:
        if c not in df.columns:
            raise PluralError(f"seed_summary: column '{c}' is not in the table (columns: {', '.join(map(str, df.columns))})")
    if seed_col in df.columns:
        dup = df.duplicated(by + [seed_col])
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise PluralError(f"seed_summary: column '{seed_col}', row {i}: seed {df[seed_col].iloc[i]!r} appears twice "
                              f"for one value of {by}; add the column that tells those lines apart to `by`")
    g = df.groupby(by, sort=True, dropna=False)
    vals = g[value_cols]
    mean, sd, n = vals.mean(), vals.std(ddof=1), vals.count()
    t = n.map(lambda k: t_quantile((1 + level) / 2, int(k) - 1))
    half = t * sd / np.sqrt(n.where(n > 0))
    out = g.size().rename("n_seeds").to_frame()
    for c in value_cols:
        out[c], out[f"{c}_lo"], out[f"{c}_hi"] = mean[c], mean[c] - half[c], mean[c] + half[c]
    return out.reset_index()


def _aligned(rows_a: pd.DataFrame, rows_b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables sorted by `row`, refusing anything but the same scored rows of the same users."""
    for name, r in (("A", rows_a), ("B", rows_b)):
        for c in ("row", "user_id", "margin", "correct"):
            if c not in r.columns:
                raise PluralError(f"paired_difference: rows of method {name} have no column '{c}' (expected plural.evaluate.predict output)")
        dup = r["row"].duplicated()
        if dup.any():
            raise PluralError(f"paired_difference: rows of method {name}, column 'row': row {r['row'][dup].iloc[0]} is scored twice")
    a, b = rows_a.sort_values("row", kind="stable"), rows_b.sort_values("row", kind="stable")
    only_a = np.setdiff1d(a["row"].to_numpy(), b["row"].to_numpy())
    only_b = np.setdiff1d(b["row"].to_numpy(), a["row"].to_numpy())
    if len(only_a) or len(only_b):
        which, r = ("A", only_a[0]) if len(only_a) else ("B", only_b[0])
        raise PluralError(f"paired_difference: the scored row sets differ (column 'row': row {r} is scored by method {which} only, "
                          f"{len(only_a)} rows by A only, {len(only_b)} by B only); score both methods on the same table with the same --shots")
    diff_user = a["user_id"].to_numpy() != b["user_id"].to_numpy()
    if diff_user.any():
        raise PluralError(f"paired_difference: column 'user_id', row {a['row'].to_numpy()[diff_user][0]}: the two tables name different users; "
                          "they were not scored on the same data")
    return a.reset_index(drop=True), b.reset_index(drop=True)


def paired_difference(rows_a: pd.DataFrame, rows_b: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> pd.DataFrame:
    """Method A minus method B on the same scored rows, overall and per group.

    rows_a, rows_b: `predict` output of the two methods on one table (joined on `row`; differing row
    sets or users are refused). Per row d = correct_A - correct_B in {-1, 0, 1}, and with ground truth
    (`oracle_p` non-null in A) also d = expected_A - expected_B (noise-free accuracy difference). CIs:
    `bootstrap_ci` of the mean of d, resampling users (level `level`, `n_boot` resamples, `seed`).
    Columns: group, n_users, n_pairs, accuracy_a, accuracy_b, accuracy_diff, accuracy_diff_lo,
    accuracy_diff_hi, and with ground truth expected_a, expected_b, expected_diff, expected_diff_lo,
    expected_diff_hi. Differences are in accuracy units (fractions of rows).
    """
    a, b = _aligned(rows_a, rows_b)
    score = {"accuracy": (a["correct"].to_numpy(float), b["correct"].to_numpy(float))}
    if "oracle_p" in a.columns and a["oracle_p"].notna().all():
        p = a["oracle_p"].to_numpy(float)
        score["expected"] = (expected_accuracy(a["margin"].to_numpy(), p), expected_accuracy(b["margin"].to_numpy(), p))
    frame = a[["user_id"] + (["group"] if "group" in a.columns else [])].copy()
    for k, (sa, sb) in score.items():
        frame[f"{k}_a"], frame[f"{k}_b"], frame[f"{k}_diff"] = sa, sb, sa - sb
    lines = []
    for key, r in _subsets(frame):
        line = {"group": key, "n_users": r["user_id"].nunique(), "n_pairs": len(r)}
        for k in score:
            lo, hi = bootstrap_ci(r[f"{k}_diff"].to_numpy(), r["user_id"].to_numpy(), n_boot, level, seed)
            line.update({f"{k}_a": r[f"{k}_a"].mean(), f"{k}_b": r[f"{k}_b"].mean(), f"{k}_diff": r[f"{k}_diff"].mean(),
                         f"{k}_diff_lo": lo, f"{k}_diff_hi": hi})
        lines.append(line)
    return pd.DataFrame(lines)


def _ratio_ci(num: np.ndarray, den: np.ndarray, clusters: np.ndarray, n_boot: int, level: float,
              seed: int) -> tuple[float, float]:
    """Percentile CI of sum(num) / sum(den) resampling clusters with replacement; num, den: [n_rows].

    Resamples with a zero denominator are dropped; NaN bounds if none is left.
    """
    codes, uniq = pd.factorize(np.asarray(clusters))
    sn = np.bincount(codes, weights=num, minlength=len(uniq))
    sd = np.bincount(codes, weights=den, minlength=len(uniq))
    draws = np.random.default_rng(seed).integers(0, len(uniq), size=(n_boot, len(uniq)))
    bn, bd = sn[draws].sum(1), sd[draws].sum(1)
    reps = bn[bd != 0] / bd[bd != 0]
    if not len(reps):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))


def group_gap_closed(rows: pd.DataFrame, min_denominator: float = 0.02, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> pd.DataFrame:
    """Gap closed of the noise-free accuracy, (expected - single) / (oracle - single), overall and per group.

    rows: `predict` output on a simulated population (`oracle_p` and `population_p` non-null). A line
    whose denominator oracle - single (accuracy units) is below `min_denominator` has too little
    room between the single reward and the oracle for the ratio to mean anything: its gap_closed and
    CI are NaN and small_denominator is True. The CI resamples the subset's users with replacement
    and recomputes the ratio of the resampled means.
    Columns: group, n_users, n_pairs, expected, oracle, single, denominator, gap_closed,
    gap_closed_lo, gap_closed_hi, small_denominator.
    """
    for c in ("user_id", "margin", "correct", "oracle_p", "population_p"):
        if c not in rows.columns or rows[c].isna().any():
            raise PluralError(f"group_gap_closed: column '{c}' is missing or has nulls; the gap closed needs a simulated "
                              "population's ground truth (oracle_p, population_p)")
    lines = []
    for key, r in _subsets(rows):
        cols = _cols(r)
        e, o, s = cols["expected"], cols["oracle"], cols["single"]
        den = float(o.mean() - s.mean())
        small = not den >= min_denominator
        gap, lo, hi = (float("nan"),) * 3
        if not small:
            gap = float((e.mean() - s.mean()) / den)
            lo, hi = _ratio_ci(e - s, o - s, r["user_id"].to_numpy(), n_boot, level, seed)
        lines.append({"group": key, "n_users": r["user_id"].nunique(), "n_pairs": len(r), "expected": e.mean(),
                      "oracle": o.mean(), "single": s.mean(), "denominator": den, "gap_closed": gap,
                      "gap_closed_lo": lo, "gap_closed_hi": hi, "small_denominator": small})
    return pd.DataFrame(lines)
