"""Attribute predictors: one small Bradley-Terry scorer per attribute over the frozen text embedding.

    plural attributes fit PAIRS OUT [--val VAL] [--seed S] [--set key=value ...]
    plural attributes score --scorers OUT IN OUT2

PrefPalette (Li et al., 2025) trains one attribute predictor per attribute on counterfactual rewrites
(the same text with more / less of the attribute) and uses its hidden state as the attribute's
representation. Here each attribute i gets a one-hidden-layer scorer over the embedding e(y) (D = 384
with the default MiniLM embedder),

    h_i(y) = act(W_i e(y) + b_i)          (H = `hidden`, the attribute's representation)
    s_i(y) = w_i^T h_i(y)                 (its score; only differences are identified, as in any BT model)

trained with the Bradley-Terry loss -log sigma(s_i(higher) - s_i(lower)) on ordered pairs of that attribute.

PAIRS is a table (Parquet, JSON Lines or CSV; a folder of them) with one row per ordered pair:
`attribute` (str: the name, used in the `chosen_attr_<name>` columns), and either the texts `higher` and
`lower` (the text with more of the attribute, the one with less; embedded offline and cached) or their
embeddings `higher_embedding` / `lower_embedding` (lists of floats). Every attribute is trained at once,
as one community per attribute of the shared trainer (`plural.train`): same optimiser, checkpoints,
resume, determinism per seed and validation. Validation: the pairs table VAL when given (best: pairs of
texts that none of PAIRS shows), else `data.val_fraction` (0.1) of each attribute's pairs held out;
training keeps the best parameters by validation accuracy and stops early.

OUT is a folder: the training run (`run/`: config, checkpoints, metrics) and the exported scorers,
`scorers.safetensors` (w1 (A, D, H), b1 (A, H), w2 (A, H), mean (A,), std (A,)) and `scorers.json`
(attributes, embedder, dimensions, per-attribute pair counts and validation accuracy). Only these two
files are needed to score.

Scores are standardised: `plural attributes score` writes z_i(y) = (s_i(y) - mean_i) / std_i, with
mean_i and std_i of s_i over the distinct training texts, so that every attribute enters an
attribute-weighted model (palette) on the same scale and a weight compares across attributes.

`--scorers persona` names the scorers shipped with plural (plural/scorers/persona: 25 persona dimensions
of Anthropic's persona statements, CC-BY-4.0; how they were trained: `personas.persona_scorers`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx

from plural.data.batching import GroupBatches
from plural.errors import PluralError
from plural.models.base import ACTIVATIONS, RewardModel, bt_nll, masked_accuracy

SHIPPED = Path(__file__).resolve().parent / "scorers"  # plural/scorers/<name>/scorers.{json,safetensors}
NAME = re.compile(r"[A-Za-z0-9_.-]+")  # an attribute name: it becomes part of a column name


@dataclasses.dataclass(frozen=True)
class ScorerHparams:
    hidden: int = 16  # H: width of each attribute's representation h_i
    activation: Literal["gelu", "relu", "tanh", "silu", "linear"] = "gelu"


class AttributeScorers(RewardModel):
    """A attribute scorers trained at once: the attributes are the communities (groups) of a pairs table
    (user = group = attribute, chosen = higher, rejected = lower). Not a preference model of people, so not
    in the family registry; it goes through the trainer by class (`plural.run.fit(AttributeScorers, ...)`).

    Defaults (hidden 16, lr 3e-3, weight decay 0.1, at most 2000 steps of 64 pairs per attribute, early
    stopping on validation) train the shipped persona scorers. Hidden and weight decay were chosen on their
    validation pairs (`python -m personas.persona_scorers --stance-only --set model.hidden=H --set
    train.weight_decay=W`, H in 8 / 16 / 32, W in 0.01 / 0.1 / 1.0): mean validation accuracy 0.984-0.987
    over the nine, best 0.987 at (16, 0.1) and (32, 1.0), the smaller taken. That sweep trained on (Yes, No)
    pairs alone, before the off-topic pairs were added (whose own choice is in `personas.persona_scorers`);
    the point was kept for them. lr and steps were not swept."""

    name = "attribute-scorers"
    summary = "one Bradley-Terry scorer per attribute over the frozen embedding"
    reference = "Li et al., PrefPalette: Personalized Preference Modeling with Latent Attributes, 2025"
    Hparams = ScorerHparams
    batches = GroupBatches()
    train_defaults = {"steps": 2000, "lr": 3e-3, "weight_decay": 0.1}

    @classmethod
    def check_settings(cls, hp, batches):
        if hp.hidden < 1:
            raise PluralError(f"--set model.hidden={hp.hidden}: must be >= 1")

    def __init__(self, spec: dict, hp: ScorerHparams, rngs: nnx.Rngs):
        self.check_settings(hp, None)
        A, D, H = max(len(spec.get("groups", [])), 1), spec["dim"], hp.hidden
        self.activation = hp.activation
        key = rngs.params
        self.w1 = nnx.Param(jax.random.normal(key(), (A, D, H)) / np.sqrt(D))
        self.b1 = nnx.Param(jnp.zeros((A, H)))
        self.w2 = nnx.Param(jax.random.normal(key(), (A, H)) / np.sqrt(H))
        self.share = nnx.Variable(jnp.full((A,), 1.0 / A))

    def scores(self, e: jax.Array) -> jax.Array:
        """Raw scores s_i(y) of every attribute: embeddings (..., D) -> (..., A)."""
        return attribute_scores(e, self.w1[...], self.b1[...], self.w2[...], ACTIVATIONS[self.activation])

    def loss(self, batch, key, step):
        # batch: (B, A, D) pairs of every attribute (GroupBatches); attribute a's scorer reads column a only
        def own(e):
            return attribute_scores(e, self.w1[...], self.b1[...], self.w2[...], ACTIVATIONS[self.activation], own=True)

        m = own(batch["chosen"]) - own(batch["rejected"])
        nll = bt_nll(m, batch["mask"])
        return nll, {"accuracy": masked_accuracy(m, batch["mask"]), "nll": nll}

    # the "users" are the attributes: a state is a weight per attribute (one-hot for a seen attribute)
    def reward(self, prompt, response, state):
        return (self.scores(response) * state).sum(-1)

    def population_state(self):
        return self.share[...]

    def group_state(self, group):
        onehot = jax.nn.one_hot(jnp.maximum(group, 0), self.share.shape[0])
        return jnp.where((group >= 0)[..., None], onehot, self.share[...])

    def seen_states(self, dd):
        return jax.nn.one_hot(jnp.maximum(dd["group"][dd["user_rows"][:, 0]], 0), self.share.shape[0])


def attribute_scores(e, w1, b1, w2, act, own: bool = False):
    """s_a(y) = w2_a . act(W1_a e(y) + b1_a) with w1 (A, D, H), b1 (A, H), w2 (A, H): embeddings (..., D) ->
    (..., A), every scorer on every text; with `own`, e is (..., A, D) and scorer a reads e[..., a, :] only."""
    h = act(jnp.einsum("...ad,adh->...ah" if own else "...d,adh->...ah", e, w1) + b1)
    return (h * w2).sum(-1)


_attribute_scores = jax.jit(attribute_scores, static_argnames=("act", "own"))


# -- the pairs table -------------------------------------------------------------------------------------
def read_pairs(path: str | Path, embedder: str = "minilm"):
    """Read and check a pairs table -> `PreferenceData` with one group (and user) per attribute.

    One-line errors name the file, column and row; texts are embedded (cached) after every check passed."""
    from plural.data.arrays import PreferenceData
    from plural.data.sources._io import list_inputs, read_rows

    attrs, texts, vectors = [], {"higher": [], "lower": []}, {"higher": [], "lower": []}
    kinds = set()
    for f in list_inputs(path, ("jsonl", "csv", "parquet")):
        rows = read_rows(f, ("jsonl", "csv", "parquet"))
        for i, rec in enumerate(rows.records):
            a = rows.get(i, rec, "attribute", "str")
            if not NAME.fullmatch(a):
                rows.fail(i, "attribute", f"{a!r} cannot be part of a column name (letters, digits, _ . -)")
            attrs.append(a)
            embedded = isinstance(rec, dict) and rec.get("higher_embedding") is not None
            kinds.add(embedded)
            if len(kinds) > 1:
                rows.fail(i, "higher_embedding", "some rows give embeddings and some texts: give one kind for every row")
            for side in ("higher", "lower"):
                if embedded:
                    v = rows.get(i, rec, f"{side}_embedding", "list")
                    try:
                        vec = np.asarray(v, np.float32)
                    except (TypeError, ValueError):
                        rows.fail(i, f"{side}_embedding", "expected a list of numbers")
                    if vec.ndim != 1 or not np.isfinite(vec).all():
                        rows.fail(i, f"{side}_embedding", "expected a flat list of finite numbers")
                    if vectors[side] and len(vec) != len(vectors[side][0]):
                        rows.fail(i, f"{side}_embedding", f"has {len(vec)} numbers, earlier rows {len(vectors[side][0])}")
                    vectors[side].append(vec)
                else:
                    texts[side].append(rows.get(i, rec, side, "str"))
    if not attrs:
        raise PluralError(f"{path}: no pairs")
    if kinds == {True}:
        emb = {side: np.stack(vectors[side]) for side in vectors}
        if emb["higher"].shape[1] != emb["lower"].shape[1]:
            raise PluralError(f"{path}: higher_embedding has {emb['higher'].shape[1]} numbers per row, lower_embedding "
                              f"{emb['lower'].shape[1]}")
    else:
        from plural.embed import embed_texts

        emb = {side: embed_texts(texts[side], embedder=embedder) for side in texts}
    df = pd.DataFrame({"user_id": attrs, "group": attrs})
    return PreferenceData.from_frame(df, {"chosen_embedding": emb["higher"], "rejected_embedding": emb["lower"]},
                                     source=str(path))


# -- fit and export --------------------------------------------------------------------------------------
def fit_scorers(pairs: str | Path, out: str | Path, val: str | Path | None = None, seed: int = 0,
                overrides: list[str] = (), resume: bool = False, embedder: str = "minilm",
                progress: bool = True, test: str | Path | None = None) -> dict:
    """`plural attributes fit`: train one scorer per attribute of PAIRS, write OUT/run and the exported scorers.

    `test`: a pairs table scored once after training (`test_accuracy` per attribute in scorers.json).
    Returns the contents of OUT/scorers.json."""
    from plural.run import fit

    data = read_pairs(pairs, embedder)
    held = {name: read_pairs(p, embedder) for name, p in (("val", val), ("test", test)) if p is not None}
    for name, d in held.items():
        unknown = sorted(set(d.groups) - set(data.groups))
        if unknown:
            raise PluralError(f"{val if name == 'val' else test}: attribute {unknown[0]!r} has no pairs in {pairs}")
    out = Path(out)
    result = fit(AttributeScorers, pairs, out / "run", seed=seed, resume=resume, overrides=list(overrides),
                 progress=progress, data=data, val=held.get("val"))
    model = result.model(0)
    texts = np.unique(np.concatenate([data.chosen, data.rejected]), axis=0)
    raw = np.asarray(jax.jit(model.scores)(jnp.asarray(texts)))  # (T, A)
    metrics = result.seed_metrics(0)
    info = {
        "attributes": list(data.groups),
        "embedder": embedder,
        "dim": data.dim,
        "hidden": model.w1.shape[-1],
        "activation": model.activation,
        "pairs": {a: int(n) for a, n in zip(data.groups, np.bincount(data.group, minlength=len(data.groups)))},
        "val_accuracy": _accuracy(model, held["val"], data.groups) if "val" in held else metrics.get("best_val_accuracy"),
        **({"test_accuracy": _accuracy(model, held["test"], data.groups)} if "test" in held else {}),
        "best_step": metrics.get("best_step"),
        "seed": seed,
        "overrides": list(overrides),
        "source": str(pairs),
    }
    save_scorers(out, {"w1": model.w1[...], "b1": model.b1[...], "w2": model.w2[...],
                       "mean": raw.mean(0), "std": np.maximum(raw.std(0), 1e-6)}, info)
    return info


def _accuracy(model, data, attributes) -> dict:
    """Per-attribute accuracy of the scorers (attributes in the fit's order) on a pairs table `data`."""
    s = jax.jit(model.scores)
    col = np.asarray([list(attributes).index(g) for g in data.groups])[data.group]
    m = np.asarray(s(jnp.asarray(data.chosen)) - s(jnp.asarray(data.rejected)))[np.arange(data.n_pairs), col]
    return {g: float((m[data.group == k] > 0).mean()) for k, g in enumerate(data.groups)}


def save_scorers(out: Path, arrays: dict, info: dict) -> None:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()}, str(out / "scorers.safetensors"))
    (out / "scorers.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


# -- scoring ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Scorers:
    """Exported scorers, loaded: `Scorers.load(OUT or "persona")(embeddings (N, D)) -> (N, A)` standardised scores."""

    attributes: tuple[str, ...]
    arrays: dict
    info: dict

    @classmethod
    def load(cls, where: str | Path) -> "Scorers":
        path = Path(where)
        if not (path / "scorers.json").exists() and (SHIPPED / str(where) / "scorers.json").exists():
            path = SHIPPED / str(where)
        files = [path / "scorers.json", path / "scorers.safetensors"]
        missing = [f for f in files if not f.exists()]
        if missing:
            shipped = ", ".join(sorted(p.name for p in SHIPPED.iterdir() if (p / "scorers.json").exists())) if SHIPPED.is_dir() else ""
            raise PluralError(f"--scorers {where}: {missing[0]} not found (a folder written by plural attributes fit"
                              + (f", or a shipped name: {shipped})" if shipped else ")"))
        from safetensors.numpy import load_file

        info = json.loads(files[0].read_text())
        arrays = load_file(str(files[1]))
        return cls(tuple(info["attributes"]), arrays, info)

    def __call__(self, e: np.ndarray) -> np.ndarray:
        e = np.asarray(e, np.float32)
        if e.shape[-1] != self.arrays["w1"].shape[1]:
            raise PluralError(f"embeddings of {e.shape[-1]} dims, but the scorers read {self.arrays['w1'].shape[1]} "
                              f"({self.info['embedder']})")
        a = self.arrays
        z = _attribute_scores(e, a["w1"], a["b1"], a["w2"], ACTIVATIONS[self.info["activation"]])
        return np.asarray((z - a["mean"]) / a["std"])


def score_table(scorers: str | Path, inp: str | Path, out: str | Path) -> dict:
    """`plural attributes score`: write table IN with `chosen_attr_<a>` / `rejected_attr_<a>` for every attribute
    of the scorers to OUT (.parquet or .jsonl). IN is a preference table as `plural fit` reads it, checked the
    same way; its embedding columns are used when present (and kept), else its texts are embedded (cached) and
    OUT gets no embedding columns. Attribute columns of the same names already in IN are replaced."""
    from plural.data.table import read_embedded
    from plural.embed.tables import OUT_SUFFIXES, _write

    sc = Scorers.load(scorers)
    inp, out = Path(inp), Path(out)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise PluralError(f"{out}: unknown output type '{out.suffix}' (expected .parquet or .jsonl)")
    df, emb, stored = read_embedded(inp, sc.info["embedder"])
    width = sc.arrays["w1"].shape[1]
    if emb["chosen_embedding"].shape[1] != width:
        raise PluralError(f"{inp}: column 'chosen_embedding' has {emb['chosen_embedding'].shape[1]} numbers per row, but "
                          f"the scorers {scorers} read {width} ({sc.info['embedder']} embeddings)")
    replaced = [c for c in df.columns if c[len("chosen_attr_"):] in sc.attributes and c.startswith("chosen_attr_")]
    if replaced:
        print(f"plural: note: replacing {len(replaced)} existing attribute column pair(s) of {inp}", file=sys.stderr)
    new = {}
    for side in ("chosen", "rejected"):
        z = sc(emb[f"{side}_embedding"])
        new.update({f"{side}_attr_{a}": z[:, k] for k, a in enumerate(sc.attributes)})
    df = pd.concat([df.drop(columns=[c for c in new if c in df.columns]), pd.DataFrame(new, index=df.index)], axis=1)
    _write(df, {k: v.astype(np.float32) for k, v in emb.items()} if stored else {}, out)
    return {"rows": len(df), "attributes": len(sc.attributes), "out": str(out)}
