"""Policies over candidate responses, judged by each group: expected reward and win rate.

A learned mixture (MaxMin's heads, a PAL or MiCRo model's components) proposes rewards R_k for n
candidate responses to each of P prompts. Two KL-regularised policies act on them, prompt by prompt
(`plural.models.maxmin`): the egalitarian one, which maximises the worst head's expected reward, and the
utilitarian one, which maximises the share-weighted average. Each is then judged by every true group g
with that group's own rewards U_g (ground truth of a simulated population, in logits):

- expected reward E_{y ~ pi}[U_g(x, y)], averaged over prompts;
- win rate against the reference policy (uniform over the candidates unless given): the probability
  that a group member, labelling with Bradley-Terry noise, prefers y ~ pi over y' ~ ref,
  sum_ij pi_i ref_j sigma(U_g(y_i) - U_g(y_j)), averaged over prompts (0.5 = no better than the reference).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from plural.models.maxmin import maxmin_policy, utilitarian_policy


def policies(head_rewards: np.ndarray, weights: np.ndarray, beta: float) -> dict[str, np.ndarray]:
    """{"maxmin", "utilitarian"}: (P, n) policies from the heads' rewards (K, P, n) and the utilitarian
    weights (K,) (e.g. the share of users assigned to each head), KL weight `beta` to the uniform policy."""
    R = jnp.asarray(head_rewards, jnp.float32)
    w = jnp.asarray(weights, jnp.float32)
    per_prompt = jnp.moveaxis(R, 1, 0)  # (P, K, n)
    egal = jax.jit(jax.vmap(lambda r: maxmin_policy(r, beta)[0]))(per_prompt)
    util = jax.jit(jax.vmap(lambda r: utilitarian_policy(r, w, beta)))(per_prompt)
    return {"maxmin": np.asarray(egal, np.float64), "utilitarian": np.asarray(util, np.float64)}


def policy_report(pols: dict[str, np.ndarray], group_rewards: np.ndarray, groups: list[str],
                  shares: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (policy, group) with `expected_reward` and `win_rate` (module docstring), plus a row per
    policy for group "worst" (the minimum over groups of each) and, with `shares`, "average" (share-weighted).

    pols: {name: (P, n) probabilities}; group_rewards (G, P, n) the true rewards U_g; groups: G names."""
    U = np.asarray(group_rewards, np.float64)
    n = U.shape[-1]
    ref = np.full(n, 1.0 / n)
    beat = 1.0 / (1.0 + np.exp(-(U[..., :, None] - U[..., None, :])))  # (G, P, n, n) P(y_i beats y_j)
    rows = []
    for name, pi in pols.items():
        expected = (U * pi[None]).sum(-1).mean(-1)  # (G,)
        win = np.einsum("pi,gpij,j->gp", pi, beat, ref).mean(-1)  # (G,)
        rows += [{"policy": name, "group": g, "expected_reward": e, "win_rate": w} for g, e, w in zip(groups, expected, win)]
        rows.append({"policy": name, "group": "worst", "expected_reward": expected.min(), "win_rate": win.min()})
        if shares is not None:
            s = np.asarray(shares, np.float64) / np.sum(shares)
            rows.append({"policy": name, "group": "average", "expected_reward": float(s @ expected), "win_rate": float(s @ win)})
    return pd.DataFrame(rows)
