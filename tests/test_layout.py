"""The repository's shape: dependencies point one way.

The core library (everything in `plural/` except the command layer: cli, demo, grid, bench) imports
nothing from `analysis`, `personas`, `paper_figs` or `experiments`, at module level or inside functions,
so that it can be used (and installed) without them; the command layer may use them all."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND_LAYER = {"cli.py", "demo.py", "grid.py", "bench.py"}
OUTSIDE = ("analysis", "personas", "paper_figs", "experiments")


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_the_core_library_imports_nothing_from_outside_it():
    core = [p for p in (ROOT / "plural").rglob("*.py")
            if not (p.parent == ROOT / "plural" and p.name in COMMAND_LAYER)]
    assert len(core) > 20 and any(p.name == "train.py" for p in core)
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in core for line, mod in _imports(p)
           if mod.split(".")[0] in OUTSIDE]
    assert not bad, "\n".join(bad)


def test_the_check_sees_function_level_imports(tmp_path):
    """The walker must catch an import hidden inside a function (how a cycle usually sneaks in)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from analysis.metrics import gap_closed\n    import personas\n")
    assert [m for _, m in _imports(f)] == ["analysis.metrics", "personas"]
