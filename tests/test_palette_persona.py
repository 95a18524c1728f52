"""PrefPalette on real text: communities defined by persona dimensions, attributes from the shipped persona
scorers (`plural attributes score --scorers persona`). Ground truth: community k holds or opposes persona
dimension k alone (truth.json `defining`); its profile's top attribute should be that dimension.

Slow (about 2 min: the 25 dimensions' ~25k statements are embedded once, then one palette fit); run with
`python -m pytest -m slow tests/test_palette_persona.py`.
"""

from __future__ import annotations

import json

import pytest

from analysis.profiles import profile_of, top_attribute_hits
from personas.persona_scorers import community_config
from personas.statements import simulate_statements
from plural.data import read_table
from plural.run import fit, load_run


def _hits(run_dir, table, defining):
    profile, _ = profile_of(load_run(run_dir), read_table(table), n_boot=0)
    return top_attribute_hits(profile, defining)["hit"].mean()


@pytest.mark.slow
def test_profiles_put_each_communitys_defining_dimension_on_top(tmp_path):
    data = tmp_path / "persona25"
    simulate_statements(community_config(25)).write(data)
    defining = json.loads((data / "truth.json").read_text())["defining"]
    assert len(defining) == 25
    fit("palette", data / "train.parquet", tmp_path / "run", val_path=data / "val.parquet", progress=False)
    hits = _hits(tmp_path / "run", data / "test.parquet", defining)
    assert hits >= 0.8, hits
    # one training step: the attention has not learned which attribute matters (random initialisation)
    fit("palette", data / "train.parquet", tmp_path / "untrained", val_path=data / "val.parquet", progress=False,
        overrides=["train.steps=1", "train.eval_every=1"])
    assert _hits(tmp_path / "untrained", data / "test.parquet", defining) < 0.3
