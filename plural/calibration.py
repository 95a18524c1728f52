"""Calibration of a reward model's preference probabilities, and whether its uncertainty tracks its errors.

Input is the row table of `plural.evaluate.predict` (one row per scored comparison): `margin` =
r(chosen) - r(rejected) for that row's user (reward units), `correct` (margin > 0), `user_id`, `group`,
optionally `uncertainty` (VPL: mean posterior variance of the user's latent) and, for simulated
populations, `oracle_p` = P(this user prefers `chosen`).

The model's predicted probability that the user prefers `chosen` is q = sigmoid(margin). The realised
label is always "chosen" (y = 1), so the proper scores are those of q against y = 1.

Definitions (all means are over rows, i.e. comparisons):
- `log_loss` = mean(-log q) in nats, q clipped to [1e-7, 1 - 1e-7];
- `brier` = mean((1 - q)^2);
- `ece`: the model prefers `chosen` when margin > 0 and `rejected` otherwise (the tie rule of
  `correct`); its confidence is c = max(q, 1 - q) in [0.5, 1] and its hit h = 1 when the preferred
  response is the one the user chose, with h = 0.5 at margin == 0 (a tie is a coin flip, which is
  what confidence 0.5 claims). [0.5, 1] is cut into `n_bins` equal-width bins, left-closed, the last
  one closed on both sides: bin b = min(floor((c - 0.5) / w), n_bins - 1), w = 0.5 / n_bins. Then
  ece = sum_b (n_b / N) * |mean_b(h) - mean_b(c)| over non-empty bins (0 = calibrated, at most 0.5);
- with ground truth p = oracle_p (every row non-null): `oracle_log_loss` = mean(-log p) and
  `oracle_brier` = mean((1 - p)^2) (the same scores of the oracle, the floor a model can reach in
  expectation), `kl_to_oracle` = mean KL(Bernoulli(p) || Bernoulli(q)) in nats, and
  `prob_mae` = mean |q - p|. A table whose `oracle_p` is missing or partly null gets none of these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plural.errors import PluralError

EPS = 1e-7


def _sigmoid(margin: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, elementwise; shape preserved."""
    m = np.asarray(margin, float)
    e = np.exp(-np.abs(m))
    return np.where(m >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p, EPS, 1.0 - EPS)


def _oracle(rows: pd.DataFrame) -> np.ndarray | None:
    """oracle_p as float [n_rows] when present and non-null on every row, else None."""
    if "oracle_p" in rows.columns and len(rows) and rows["oracle_p"].notna().all():
        return rows["oracle_p"].to_numpy(float)
    return None


def _require(rows: pd.DataFrame, *cols: str) -> None:
    missing = [c for c in cols if c not in rows.columns]
    if missing:
        raise PluralError(f"scored rows: column '{missing[0]}' is missing (expected the output of plural.evaluate.predict)")
    if rows.empty:
        raise PluralError("scored rows: the table is empty; nothing to score")


def expected_accuracy(margin: np.ndarray, oracle_p: np.ndarray) -> np.ndarray:
    """Per-row probability that a model with `margin` agrees with the user's (noisy) label."""
    margin, p = np.asarray(margin), np.asarray(oracle_p)
    return np.where(margin > 0, p, 1.0 - p)


def confidence_and_hit(margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row [n]: confidence c = max(q, 1 - q) in [0.5, 1] and hit h in {0, 0.5, 1} (see module doc)."""
    margin = np.asarray(margin, float)
    q = _sigmoid(margin)
    return np.maximum(q, 1.0 - q), np.where(margin > 0, 1.0, np.where(margin == 0, 0.5, 0.0))


def reliability_curve(rows: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """The reliability diagram of the preferred response's probability: one line per bin, n_bins lines.

    Columns: bin (0..n_bins-1), lo, hi (bin edges in [0.5, 1]), mean_predicted (mean confidence c of
    the bin's rows), frequency (mean hit h: how often the preferred response was the chosen one), n
    (rows in the bin). Empty bins keep their line with n = 0 and NaN mean_predicted / frequency.
    """
    _require(rows, "margin")
    if int(n_bins) != n_bins or n_bins < 1:
        raise PluralError(f"reliability_curve: n_bins must be a positive integer, got {n_bins!r}")
    c, h = confidence_and_hit(rows["margin"].to_numpy())
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    b = np.minimum(np.floor((c - 0.5) / (0.5 / n_bins)).astype(int), n_bins - 1)
    n = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = np.bincount(b, weights=c, minlength=n_bins) / n
        freq = np.bincount(b, weights=h, minlength=n_bins) / n
    return pd.DataFrame({"bin": np.arange(n_bins), "lo": edges[:-1], "hi": edges[1:],
                         "mean_predicted": mean_c, "frequency": freq, "n": n})


def calibration_metrics(rows: pd.DataFrame, n_bins: int = 10) -> dict[str, float]:
    """Proper scores and ECE of q = sigmoid(margin) over `rows` (module doc for the exact definitions).

    Returns {"n_pairs", "log_loss", "brier", "ece"} and, with ground truth, also "oracle_log_loss",
    "oracle_brier", "kl_to_oracle", "prob_mae". Units: nats for the log scores, probability otherwise.
    """
    _require(rows, "margin")
    q = _sigmoid(rows["margin"].to_numpy())
    curve = reliability_curve(rows, n_bins)
    full = curve[curve["n"] > 0]
    out = {"n_pairs": int(len(rows)),
           "log_loss": float(np.mean(-np.log(_clip(q)))),
           "brier": float(np.mean((1.0 - q) ** 2)),
           "ece": float(np.sum(full["n"] * np.abs(full["frequency"] - full["mean_predicted"])) / len(rows))}
    p = _oracle(rows)
    if p is not None:
        qc, pc = _clip(q), _clip(p)
        kl = p * (np.log(pc) - np.log(qc)) + (1.0 - p) * (np.log(1.0 - pc) - np.log(1.0 - qc))
        out.update(oracle_log_loss=float(np.mean(-np.log(pc))), oracle_brier=float(np.mean((1.0 - p) ** 2)),
                   kl_to_oracle=float(np.mean(kl)), prob_mae=float(np.mean(np.abs(q - p))))
    return out


def per_group_calibration(rows: pd.DataFrame, n_bins: int = 10) -> dict[str, dict[str, float]]:
    """{group: calibration_metrics of that group's rows}, groups sorted; {} when no row has a group."""
    _require(rows, "margin", "group")
    return {str(g): calibration_metrics(r, n_bins) for g, r in rows.groupby("group", sort=True)}


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing the average of their ranks. x: [..., n] -> float [..., n]."""
    x = np.asarray(x, float)
    order = np.argsort(x, axis=-1, kind="stable")
    s = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    pos = np.broadcast_to(np.arange(n), s.shape)
    new = np.ones(s.shape, bool)
    new[..., 1:] = s[..., 1:] != s[..., :-1]  # first position of each run of equal values
    last = np.ones(s.shape, bool)
    last[..., :-1] = new[..., 1:]  # last position of each run
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=-1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(last, pos, n), -1), axis=-1), -1)
    ranks = np.empty_like(s)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=-1)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rank correlation along the last axis (Pearson of average ranks). x, y: [..., n] -> [...].

    NaN where either side is constant (its ranks have no spread) or n < 2.
    """
    rx, ry = average_ranks(x), average_ranks(y)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def per_user_error(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per user (sorted): user_id, uncertainty (mean over the user's rows), error, n_pairs.

    error = 1 - expected accuracy (noise-free, `expected_accuracy`) with ground truth,
    else 1 - accuracy (fraction of the user's rows with margin > 0).
    """
    _require(rows, "user_id", "margin", "correct", "uncertainty")
    unc = rows["uncertainty"].to_numpy(float)
    if not np.isfinite(unc).all():
        bad = int(np.flatnonzero(~np.isfinite(unc))[0])
        raise PluralError(f"scored rows: column 'uncertainty', row {bad}: not a finite number")
    p = _oracle(rows)
    score = rows["correct"].to_numpy(float) if p is None else expected_accuracy(rows["margin"].to_numpy(), p)
    g = pd.DataFrame({"user_id": rows["user_id"].to_numpy(), "uncertainty": unc, "error": 1.0 - score})
    return g.groupby("user_id", sort=True).agg(uncertainty=("uncertainty", "mean"), error=("error", "mean"),
                                               n_pairs=("error", "size")).reset_index()


def uncertainty_error_correlation(rows: pd.DataFrame, n_boot: int = 1000, level: float = 0.95,
                                  seed: int = 0) -> dict:
    """Does a user's posterior uncertainty predict how wrong the model is about them?

    Spearman rank correlation across users between per-user `uncertainty` and per-user error (see
    `per_user_error`), with a percentile CI from `n_boot` bootstrap resamples of users (with
    replacement; duplicated users tie, and resamples whose ranks are constant are dropped).
    Returns {"spearman", "spearman_lo", "spearman_hi", "n_users", "error"} where "error" names the
    error used ("expected" or "accuracy"); NaN correlation with fewer than 3 users.
    """
    u = per_user_error(rows)
    x, y = u["uncertainty"].to_numpy(), u["error"].to_numpy()
    n = len(u)
    out = {"spearman": float("nan"), "spearman_lo": float("nan"), "spearman_hi": float("nan"),
           "n_users": int(n), "error": "accuracy" if _oracle(rows) is None else "expected"}
    if n < 3:
        return out
    out["spearman"] = float(spearman(x, y))
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    reps = spearman(x[draws], y[draws])
    reps = reps[np.isfinite(reps)]
    if len(reps):
        a = (1 - level) / 2
        out["spearman_lo"], out["spearman_hi"] = float(np.quantile(reps, a)), float(np.quantile(reps, 1 - a))
    return out
