"""What plural keeps between runs, under one folder: `$PLURAL_CACHE`, else `$XDG_CACHE_HOME/plural`, else
`~/.cache/plural`. Everything in it is derived and safe to delete.

    embeddings/   the offline embedder's vectors by text (plural.embed.cache)
    jit/          JAX's persistent compilation cache: a second `plural fit` / `evaluate` / `grid` of the same
                  shapes loads its compiled programs instead of compiling them (`PLURAL_JIT_CACHE=0`: off)
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("PLURAL_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "plural"


# Programs that compile faster than this are not stored: the many one-op programs of eager code would cost
# more in small files than they save. Set by hand, not swept: at 0.05 s a second small `plural fit` took
# 3.3 s end to end against 6.7 s for the first (`plural bench startup`, session 15); 0.4 MB stored.
MIN_COMPILE_S = 0.05


def enable_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache under `cache_root()/jit` (unless `PLURAL_JIT_CACHE=0`, or the
    process already chose a cache folder). Returns the folder, or None when off. The `plural` command calls
    it; Python users may too, before their first compilation."""
    import jax

    if os.environ.get("PLURAL_JIT_CACHE", "1") == "0":
        return None
    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    folder = cache_root() / "jit"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def remembered(kind: str, key: str, compute):
    """`compute()` for `key`, kept in `cache_root()/<kind>.json` so later runs on this machine get the same
    answer without computing it (e.g. the measured batching of a program shape, plural.train). A cache that
    cannot be read or written is computed around, never an error."""
    path = cache_root() / f"{kind}.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    value = compute()
    known[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=0, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass
    return value
