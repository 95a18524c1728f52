"""Test set-up: 8 fake CPU devices (replicas of a fit are split over those that divide their number; batches
are split over devices where a test asks for a mesh) and shared small populations."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
import tempfile  # noqa: E402

if "PLURAL_CACHE" not in os.environ:  # embeddings cached by tests go to a throw-away folder, not ~/.cache
    os.environ["PLURAL_CACHE"] = tempfile.mkdtemp(prefix="plural-test-cache-")

import jax  # noqa: E402
import pytest  # noqa: E402

# One compilation cache per test session: the many small fits of the suite share most of their programs
# (a second identical fit compiles ~5x faster); a throw-away folder, so no state survives the session.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="plural-test-jit-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

from personas import IdealPointConfig, simulate_ideal_point  # noqa: E402

# Parametrised cases in the slow set (`pytest -m slow`) to keep the default run under 10 minutes on 2 cores;
# the same test's other cases stay in the default run (file::test[param], as pytest names them).
SLOW_CASES = {
    "test_families.py::test_seeds_at_once_equal_a_seed_alone[vpl]",
    "test_families.py::test_seeds_at_once_equal_a_seed_alone[fewshot]",
    "test_families.py::test_seeds_at_once_equal_a_seed_alone[palette]",
    "test_families.py::test_seeds_at_once_equal_a_seed_alone[maxmin]",
    "test_families.py::test_seeds_at_once_equal_a_seed_alone[pal-b]",
    "test_families.py::test_seeds_at_once_equal_a_seed_alone[micro]",
    "test_families.py::test_seeds_at_once_equal_a_seed_alone[dpl]",
    "test_families.py::test_seeds_at_once_equal_a_seed_alone[pal-a]",
    "test_pal.py::test_training_from_a_random_start_recovers_the_groups[pal-b]",  # (pal-a's stays in the default run)
    # input dropout's wiring: bt and dpl (pair batches) stay in the default run
    *(f"test_families.py::test_input_dropout_reaches_training[{n}]"
      for n in ("vpl", "micro", "pal-a", "pal-b", "fewshot", "maxmin")),
}


@pytest.hookimpl(tryfirst=True)  # before `-m 'not slow'` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.rsplit("/", 1)[-1] in SLOW_CASES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pop3(tmp_path_factory):
    """3 groups (0.6 / 0.3 / 0.1), D = 32: a single reward cannot close the gap to the oracle."""
    pop = simulate_ideal_point(IdealPointConfig(seed=0))
    out = tmp_path_factory.mktemp("pop3")
    pop.write(out)
    return pop, out


@pytest.fixture(scope="session")
def pop1(tmp_path_factory):
    """One group: a single reward is the oracle."""
    pop = simulate_ideal_point(IdealPointConfig(n_groups=1, group_sizes=(1.0,), seed=1))
    out = tmp_path_factory.mktemp("pop1")
    pop.write(out)
    return pop, out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A small population for plumbing tests (fast to fit)."""
    pop = simulate_ideal_point(IdealPointConfig(dim=8, n_users=12, n_unseen=6, train_pairs=20, test_pairs=12,
                                                n_prompts=8, seed=2))
    out = tmp_path_factory.mktemp("tiny")
    pop.write(out)
    add_attributes(out)
    return pop, out


def add_attributes(folder, names=("length", "warmth")):
    """Give every table of a population folder attribute columns (docs/data-format.md), read off the
    responses' first embedding coordinates plus noise: what families that read attributes (palette) need;
    the others ignore them."""
    import numpy as np
    import pandas as pd

    for i, split in enumerate(("train", "val", "test")):
        path = folder / f"{split}.parquet"
        t = pd.read_parquet(path)
        rng = np.random.default_rng(i)
        for j, a in enumerate(names):
            for side in ("chosen", "rejected"):
                t[f"{side}_attr_{a}"] = np.stack(t[f"{side}_embedding"])[:, j] + 0.1 * rng.normal(size=len(t))
        t.to_parquet(path, index=False)
