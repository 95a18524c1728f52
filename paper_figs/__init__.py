"""One module per figure: each reads result tables and writes PNG + PDF + the CSV of what it plots.

`make_all(results_dir, out_dir)` renders every figure whose input exists under results_dir.
"""

from __future__ import annotations

from pathlib import Path

from paper_figs import accuracy_vs_prototypes, accuracy_vs_shots, active_vs_random, gap_vs_setting, group_accuracy, reliability

FIGURES = (group_accuracy, accuracy_vs_shots, accuracy_vs_prototypes, active_vs_random, reliability, gap_vs_setting)


def make_all(results_dir: str | Path, out_dir: str | Path) -> list[Path]:
    paths = []
    for fig in FIGURES:
        paths += fig.from_results(Path(results_dir), Path(out_dir)) or []
    return paths
