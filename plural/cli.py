"""The `plural` command line (docs/cli.md). User errors exit 2 with one line, no traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from plural.models import FAMILIES, PLANNED

    p = argparse.ArgumentParser(prog="plural", description="Pluralistic reward models in JAX.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="simulate a population, fit every family, print a subgroup table, write figures")
    d.add_argument("--out", default="plural_demo", help="output directory (default: plural_demo)")
    d.add_argument("--seed", type=int, default=0)

    em = sub.add_parser("embed", help="add the *_embedding columns for the text columns of a table")
    em.add_argument("input", help="parquet / JSON Lines file or a directory of them, with chosen / rejected (and prompt) text")
    em.add_argument("out", help="output table (.parquet or .jsonl): every input column plus the embeddings")
    em.add_argument("--embedder", default="minilm", help="offline embedder (default minilm: all-MiniLM-L6-v2, 384-d)")

    f = sub.add_parser("fit", help="train a model on a preference table")
    f.add_argument("--model", required=True, help=f"model family: {', '.join(FAMILIES)} (docs/methods.md"
                   + (f"; planned: {', '.join(PLANNED)})" if PLANNED else ")"))
    f.add_argument("--data", required=True, help="parquet / JSON Lines file or a directory of them")
    f.add_argument("--out", required=True, help="run directory")
    f.add_argument("--val", default=None, help="validation table (early stopping, best checkpoint); without it "
                   "data.val_fraction of each user's pairs are held out for validation")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="hyper-parameter override, e.g. train.steps=2000 or model.hidden=(128,); repeatable, or several after one --set")

    e = sub.add_parser("evaluate", help="score a table with a fitted model")
    e.add_argument("--run", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--shots", type=int, default=0, help="unseen users: adapt on their first K rows, score the rest")
    e.add_argument("--score-from", type=int, default=None, metavar="N",
                   help="unseen users: score only rows at position >= N (N >= K), the same rows for every K")
    e.add_argument("--out", required=True, help="metrics JSON file")
    e.add_argument("--rows", default=None, help="also write the scored rows (parquet) here")

    sc = sub.add_parser("score", help="every row's reward of chosen and rejected under that row's user")
    sc.add_argument("--run", required=True)
    sc.add_argument("--data", required=True)
    sc.add_argument("--shots", type=int, default=0, help="unseen users: adapt on their first K rows")
    sc.add_argument("--out", required=True, help="parquet file: the table's columns + chosen_reward, rejected_reward")

    g = sub.add_parser("grid", help="run an experiment grid spec; results as parquet under --out")
    g.add_argument("spec", help="a Python file defining get_config()")
    g.add_argument("--out", required=True)
    g.add_argument("--resume", action="store_true", help="skip the cells already finished")
    g.add_argument("--datasets", help="comma-separated names: run only these datasets of the spec")
    g.add_argument("--shard", metavar="I/N", help="train only programs I, I+N, ... (one job of a cluster array; "
                   "writes cells, not tables)")
    g.add_argument("--merge", action="store_true", help="train nothing: join the finished cells of all shards into "
                   "the result tables")

    pr = sub.add_parser("profile", help="per-community attribute profiles of a fitted palette run (CSV + CIs + heatmap)")
    pr.add_argument("--run", required=True, help="a run directory of an attribute-weighted family (palette)")
    pr.add_argument("--out", required=True, help="profile CSV: one row per community, one column per attribute; "
                    "beside it OUT's stem + .ci.csv (bootstrap CIs) and + .png (heatmap, communities clustered)")
    pr.add_argument("--data", default=None, help="table whose responses the attention is averaged over "
                    "(default: the run's training table)")
    pr.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws over responses for the CIs (default 1000)")
    pr.add_argument("--compare", default=None, metavar="OTHER.csv",
                    help="also print the rank correlation of this profile with another, per community")

    at = sub.add_parser("attributes", help="attribute scorers: fit them from ordered pairs, add attribute columns to a table")
    asub = at.add_subparsers(dest="attributes", required=True)
    af = asub.add_parser("fit", help="one Bradley-Terry scorer per attribute from a table of attribute, higher, lower")
    af.add_argument("pairs", help="pairs table (parquet / JSON Lines / CSV): attribute, higher, lower (texts), or "
                    "higher_embedding / lower_embedding")
    af.add_argument("out", help="folder: scorers.safetensors + scorers.json (and the training run in run/)")
    af.add_argument("--val", default=None, help="validation pairs (early stopping); without it data.val_fraction of "
                    "each attribute's pairs are held out")
    af.add_argument("--test", default=None, help="test pairs, scored once after training (test_accuracy in scorers.json)")
    af.add_argument("--seed", type=int, default=0)
    af.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    af.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="e.g. model.hidden=32, train.steps=3000, train.weight_decay=0.1; repeatable, or several after one --set")
    asc = asub.add_parser("score", help="add chosen_attr_<a> / rejected_attr_<a> (standardised scores) to a table")
    asc.add_argument("--scorers", required=True, help="a folder written by plural attributes fit, or a shipped name (persona)")
    asc.add_argument("input", help="preference table (as plural fit reads it: texts or embeddings)")
    asc.add_argument("out", help="output table (.parquet or .jsonl): every input column plus the attribute columns")

    fg = sub.add_parser("figs", help="regenerate the paper figures from stored results")
    fg.add_argument("--results", default="results/paper", help="a grid output directory (default results/paper)")
    fg.add_argument("--quick", action="store_true", help="if --results holds no results, run experiments/smoke.py into it first")
    fg.add_argument("--out", required=True)

    s = sub.add_parser("simulate", help="write a simulated population (train/val/test parquet + truth.json)")
    s.add_argument("--out", required=True)
    s.add_argument("--population", default="ideal-point",
                   choices=["ideal-point", "statements", "hidden-context", "communities"],  # = personas.POPULATIONS
                   help="ideal-point (embedding-space prototypes), statements (persona statements, real text), "
                        "hidden-context (groups that agree except on contested responses) or communities "
                        "(communities weighing response attributes, with attribute columns)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="population parameter, e.g. n_groups=3 group_sizes=(0.6,0.3,0.1) dim=32")

    sp = sub.add_parser("split", help="split a table by user (seen / val-unseen / test-unseen) and pair into train / val / test")
    sp.add_argument("input", help="parquet / JSON Lines file or a directory of them (not embedded)")
    sp.add_argument("outdir", help="writes OUTDIR/train, val, test (.jsonl for a .jsonl input, else .parquet)")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="unseen_fraction (0.2), val_fraction (0.1), test_fraction (0.2), seed (0), disjoint (none|prompt)")

    c = sub.add_parser("convert", help="convert a published dataset into a preference table (text columns, no embeddings)")
    c.add_argument("source", help="prism, community-alignment, summarize-feedback, attribute-scores, hh-hidden-context or shp")
    c.add_argument("input", help="the dataset's file or folder, as its publishers distribute it")
    c.add_argument("out", help="output table (.parquet or .jsonl)")
    c.add_argument("--group", default=None, help="column that becomes `group` (e.g. annotator_country, birth_region)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="converter option, e.g. turns=first, survey=PATH, attributes=helpfulness,verbosity")

    b = sub.add_parser("bench", help="speed benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    bf = bsub.add_parser("fit", help="BT training throughput vs a bare matmul of equal FLOPs")
    bf.add_argument("--dim", type=int, default=384)
    bf.add_argument("--pairs", type=int, default=1024)
    bf.add_argument("--steps", type=int, default=50)
    bf.add_argument("--out", default=None)
    bg = bsub.add_parser("grid", help="replicas (seeds, hyper-parameter points) in one program vs one by one")
    bg.add_argument("--seeds", type=int, default=16)
    bg.add_argument("--dim", type=int, default=384)
    bg.add_argument("--pairs", type=int, default=None, help="comparisons per step (pair-batch families; default "
                    "1024, with --points the family's own batch)")
    bg.add_argument("--steps", type=int, default=500, help="steps timed per model (steady state; compile timed apart)")
    bg.add_argument("--model", default="bt")
    bg.add_argument("--points", type=int, default=0, help="H > 0: H lr x weight-decay points x --seeds seeds on the "
                    "3-group population in one program vs each point as its own program, compile included")
    bg.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="model / train settings, e.g. model.hidden=(32,); repeatable, or several after one --set")
    bg.add_argument("--out", required=True)
    bs = bsub.add_parser("startup", help="first and second plural fit / evaluate of small shapes (compilation cache)")
    bs.add_argument("--steps", type=int, default=20)
    bs.add_argument("--repeats", type=int, default=3, help="second runs of each command (median and best reported)")
    bs.add_argument("--out", default=None)
    ba = bsub.add_parser("adapt", help="time to adapt a new user from K shots (jitted adapt), per user")
    ba.add_argument("--models", default="pal-a,pal-b,vpl,micro,maxmin,fewshot:maml,fewshot:reptile,fewshot:lore,fewshot:gpo",
                    help="comma-separated families; family:variant sets model.variant (fewshot:gpo)")
    ba.add_argument("--shots", type=int, default=10)
    ba.add_argument("--dim", type=int, default=384)
    ba.add_argument("--users", type=int, default=256, help="users adapted at once in the batched timing")
    ba.add_argument("--out", default=None)
    bp = bsub.add_parser("palette", help="palette: C communities fitted at once vs one by one")
    bp.add_argument("--communities", type=int, default=200)
    bp.add_argument("--pairs", type=int, default=500, help="training pairs per community")
    bp.add_argument("--steps", type=int, default=50)
    bp.add_argument("--fit-steps", type=int, default=0, help="> 0: also time whole fits end to end (that many steps, "
                    "validation every 100, compilation cache warm): all at once vs one fit per community")
    bp.add_argument("--out", default=None)
    bt = bsub.add_parser("embed-table", help="plural embed of a table of many short texts, killed part way and run "
                         "again: time, peak memory, texts kept")
    bt.add_argument("--texts", type=int, default=1_000_000)
    bt.add_argument("--kill-at", type=float, default=0.5, help="kill once the cache holds this fraction of the texts")
    bt.add_argument("--out", default=None)
    be = bsub.add_parser("embed", help="offline embedder: texts/s of the JAX encoder vs the plain numpy forward")
    be.add_argument("--texts", type=int, default=256)
    be.add_argument("--batch-size", type=int, default=64)
    be.add_argument("--repeats", type=int, default=2)
    be.add_argument("--out", default=None)
    bv = bsub.add_parser("evaluate", help="plural evaluate of random tables of growing size, unseen users adapting "
                         "from K shots")
    bv.add_argument("--rows", default="10000,100000,1000000", help="comma-separated table sizes (rows)")
    bv.add_argument("--unseen", type=float, default=0.1, help="fraction of the rows whose users are unseen")
    bv.add_argument("--shots", type=int, default=10)
    bv.add_argument("--user-rows", type=int, default=None, help="rows per unseen user (default 2 x --shots)")
    bv.add_argument("--model", default="pal-a")
    bv.add_argument("--dim", type=int, default=384)
    bv.add_argument("--steps", type=int, default=20, help="training steps of the model evaluated")
    bv.add_argument("--out", default=None)
    bm = bsub.add_parser("memory", help="peak memory of plural fit on random tables of growing size vs their arrays")
    bm.add_argument("--pairs", default="100000,1000000,2000000", help="comma-separated table sizes (pairs)")
    bm.add_argument("--dim", type=int, default=384)
    bm.add_argument("--steps", type=int, default=20)
    bm.add_argument("--no-prompt", action="store_true", help="tables without prompt embeddings (response embeddings only)")
    bm.add_argument("--out", default=None)
    return p


def expand_sets(argv: list[str]) -> list[str]:
    """`--set a=1 b=2` as `--set a=1 --set b=2`: every KEY=VALUE token that follows a `--set` value (until the
    first token that is an option or has no '=') is a setting of its own, so both spellings work and a
    positional argument after the settings stays positional."""
    out, taking = [], False
    for i, tok in enumerate(argv):
        if taking and not tok.startswith("-") and "=" in tok:
            out += ["--set", tok]
            continue
        taking = tok.startswith("--set=") or (i > 0 and argv[i - 1] == "--set")
        out.append(tok)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(expand_sets(sys.argv[1:] if argv is None else list(argv)))
    from plural.errors import PluralError

    try:
        from plural.cache import enable_compilation_cache
        from plural.parallel import init_distributed

        init_distributed()
        if args.command != "bench":  # benchmarks time real compilations (bench startup sets its own cache)
            enable_compilation_cache()
        return _dispatch(args)
    except PluralError as e:
        print(f"plural: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("plural: interrupted", file=sys.stderr)
        return 130


# Each command's outputs (argument, file or folder, as the user wrote it) and the inputs they must not overwrite.
OUTPUTS = {
    "demo": ([("out", "dir", "--out")], ()),
    "fit": ([("out", "dir", "--out")], ("data", "val")),
    "evaluate": ([("out", "file", "--out"), ("rows", "file", "--rows")], ("data",)),
    "score": ([("out", "file", "--out")], ("data",)),
    "embed": ([("out", "file", "output")], ("input",)),
    "simulate": ([("out", "dir", "--out")], ()),
    "split": ([("outdir", "dir", "output")], ("input",)),
    "convert": ([("out", "file", "output")], ("input",)),
    "grid": ([("out", "dir", "--out")], ("spec",)),
    "profile": ([("out", "file", "--out")], ("data",)),
    "figs": ([("out", "dir", "--out")], ()),
    "attributes fit": ([("out", "dir", "output")], ("pairs", "val", "test")),
    "attributes score": ([("out", "file", "output")], ("input",)),
}


def _check_outputs(args) -> None:
    """Refuse, before any work, an output that cannot be written or would overwrite an input (plural.files)."""
    from plural.files import check_output

    key = f"{args.command} {args.attributes}" if args.command == "attributes" else args.command
    outputs, inputs = OUTPUTS.get(key, ([], ()))
    given = [getattr(args, i, None) for i in inputs]
    for attr, kind, flag in outputs:
        if getattr(args, attr, None) is not None:
            check_output(getattr(args, attr), kind == "dir", flag, given)


def _dispatch(args) -> int:
    _check_outputs(args)
    if args.command == "fit":
        from plural.run import fit

        result = fit(args.model, args.data, args.out, seed=args.seed, resume=args.resume, overrides=args.overrides,
                     val_path=args.val)
        m = result.seed_metrics(0)
        best = (f", best validation accuracy {m['best_val_accuracy']:.3f} at step {m['best_step']}"
                + (f" (stopped at {m['stopped_step']})" if m["stopped_step"] else "")) if "best_step" in m else ""
        print(f"{args.model}: {m['steps']} steps, final loss {m['final_loss']:.4f}, "
              f"train accuracy {m['final_train_accuracy']:.3f}{best} -> {args.out}")
    elif args.command == "embed":
        from plural.embed.tables import embed_table

        r = embed_table(args.input, args.out, embedder=args.embedder)
        print(f"{r['rows']} rows, {r['texts']} texts ({r['distinct']} distinct; {r['cached']} found in the cache, "
              f"{r['computed']} encoded) embedded to {r['dim']} dims: {', '.join(r['columns'])} -> {r['out']}")
    elif args.command == "evaluate":
        from plural.data import read_table
        from plural.evaluate import metrics, predict
        from plural.files import write_atomic, write_parquet
        from plural.run import dumps, load_run

        run = load_run(args.run)
        rows = predict(run.result, run.users, read_table(args.data), shots=args.shots, score_from=args.score_from)
        m = metrics(rows, args.shots, score_from=args.score_from)
        write_atomic(args.out, dumps(m))
        if args.rows:
            write_parquet(rows, args.rows)
        groups = "  ".join(f"{g} {v:.3f}" for g, v in m["per_group"].items())
        print(f"accuracy {m['accuracy']:.4f} on {m['n_pairs']} pairs" + (f"  |  {groups}" if groups else ""))
    elif args.command == "score":
        from plural.data import read_table
        from plural.evaluate import rewards
        from plural.files import write_parquet
        from plural.run import load_run

        run = load_run(args.run)
        table = rewards(run.result, run.users, read_table(args.data), shots=args.shots)
        write_parquet(table, args.out)
        print(f"{len(table)} rows scored ({int(table['seen'].sum())} of seen users) -> {args.out}")
    elif args.command == "simulate":
        from plural.config import apply_overrides

        from personas import POPULATIONS

        Config, simulate = POPULATIONS[args.population]
        cfg = apply_overrides({"population": Config()}, args.overrides)["population"]
        try:
            pop = simulate(cfg)
        except ValueError as e:
            from plural.errors import PluralError
            raise PluralError(f"--set: {e}")
        out = pop.write(args.out)
        t = pop.truth()["all"]
        print(f"{len(pop.train)} train / {len(pop.val)} val / {len(pop.test)} test pairs -> {out}  "
              f"(oracle {t['oracle_accuracy']:.3f}, best single reward {t['single_accuracy']:.3f})")
    elif args.command == "split":
        from plural.data.split import split_file

        print(split_file(args.input, args.outdir, args.overrides))
    elif args.command == "convert":
        from plural.data.sources import convert

        print(convert(args.source, args.input, args.out, group=args.group, overrides=args.overrides).summary())
    elif args.command == "grid":
        from plural.grid import run_grid

        import pandas as pd

        results = run_grid(args.spec, args.out, resume=args.resume,
                           datasets=args.datasets.split(",") if args.datasets else None, shard=args.shard,
                           merge=args.merge)
        if results is None and not args.shard:
            import jax

            print(f"process {jax.process_index()} of {jax.process_count()}: done (process 0 writes the tables)")
            return 0
        if results is None:
            print(f"shard {args.shard}: its cells are under {Path(args.out) / 'cells'}; when every shard is done, "
                  f"run plural grid {args.spec} --out {args.out} --merge")
            return 0
        print(f"{results['cell'].nunique()} cells, {len(results)} result rows -> {Path(args.out) / 'results.parquet'}")
        summary = pd.read_parquet(Path(args.out) / "summary.parquet")
        value = "gap_closed" if summary["gap_closed"].notna().any() else "accuracy"
        s = summary[(summary["group"] == "all") & summary["split"].isin(["seen", "unseen"])]
        s = s[(s["split"] == "unseen") | (s["shots"] == s["shots"].min())]
        table = s.assign(col=s["split"] + "@" + s["shots"].astype(str)).pivot_table(
            index=["dataset", "method"], columns="col", values=value, aggfunc="first")
        print(f"selected on validation; test {value}, mean over seeds:")
        with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
            print(table.to_string())
    elif args.command == "figs":
        from paper_figs import make_all
        from plural.errors import PluralError

        results = Path(args.results)
        if args.quick and not (results / "results.parquet").exists():
            from plural.grid import run_grid

            run_grid(Path(__file__).resolve().parents[1] / "experiments" / "smoke.py", results, resume=True)
        if not (results / "results.parquet").exists():
            raise PluralError(f"{results}: no results.parquet; run plural grid SPEC --out {results} first (or pass --quick)")
        paths = make_all(results, args.out)
        print(f"{len([p for p in paths if p.suffix == '.png'])} figures -> {args.out}")
    elif args.command == "attributes":
        from plural import attributes

        if args.attributes == "fit":
            info = attributes.fit_scorers(args.pairs, args.out, val=args.val, test=args.test, seed=args.seed,
                                          overrides=args.overrides, resume=args.resume)
            val = info["val_accuracy"]
            worst = min(val, key=val.get) if isinstance(val, dict) else None
            print(f"{len(info['attributes'])} attribute scorers"
                  + (f", validation accuracy mean {sum(val.values()) / len(val):.3f} (lowest {worst} {val[worst]:.3f})"
                     if worst else f", validation accuracy {val:.3f}" if val is not None else "") + f" -> {args.out}")
        else:
            r = attributes.score_table(args.scorers, args.input, args.out)
            print(f"{r['rows']} rows, {r['attributes']} attributes scored -> {r['out']}")
    elif args.command == "profile":
        _profile(args)
    elif args.command == "demo":
        from plural.demo import run_demo

        run_demo(Path(args.out), seed=args.seed)
    elif args.command == "bench":
        from plural import bench

        if args.bench == "fit":
            bench.bench_fit(args.dim, args.pairs, args.steps, args.out)
        elif args.bench == "grid":
            bench.bench_grid(args.seeds, args.dim, args.pairs, args.steps, args.model, args.overrides, args.points,
                             args.out)
        elif args.bench == "startup":
            bench.bench_startup(args.steps, args.out, args.repeats)
        elif args.bench == "adapt":
            bench.bench_adapt(tuple(args.models.split(",")), args.shots, args.dim, args.users, args.out)
        elif args.bench == "palette":
            bench.bench_palette(args.communities, args.pairs, args.steps, args.out, fit_steps=args.fit_steps)
        elif args.bench == "embed-table":
            bench.bench_embed_table(args.texts, args.kill_at, out=args.out)
        elif args.bench == "embed":
            bench.bench_embed(args.texts, args.batch_size, args.out, args.repeats)
        elif args.bench == "evaluate":
            bench.bench_evaluate(tuple(int(n) for n in args.rows.split(",")), args.unseen, args.shots, args.model,
                                 args.user_rows, args.dim, args.steps, args.out)
        elif args.bench == "memory":
            bench.bench_memory(tuple(int(n) for n in args.pairs.split(",")), args.dim, args.steps, args.out,
                               prompt=not args.no_prompt)
    return 0


def _profile(args) -> None:
    from analysis.profiles import compare_profiles, heatmap, profile_of, read_profile
    from plural.data import read_table
    from plural.errors import PluralError
    from plural.run import load_run

    out = Path(args.out)
    if out.suffix != ".csv":
        raise PluralError(f"--out {out}: a profile is written as .csv")
    if args.bootstrap < 0:
        raise PluralError(f"--bootstrap {args.bootstrap}: must be >= 0")
    other = read_profile(args.compare) if args.compare else None  # checked before any work
    run = load_run(args.run)
    data_path = args.data or run.config.get("data_path")
    if not data_path or not Path(data_path).exists():
        raise PluralError(f"{args.run}: its training table {data_path!r} is not there; pass --data TABLE")
    profile, ci = profile_of(run, read_table(data_path), n_boot=args.bootstrap)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile.to_csv(out, index=False)
    ci.to_csv(out.with_suffix(".ci.csv"), index=False)
    heatmap(profile, out.with_suffix(".png"))
    top = profile.set_index("community").idxmax(axis=1)
    print(f"{len(profile)} communities x {profile.shape[1] - 1} attributes -> {out} (+ .ci.csv, .png)")
    for g, a in top.items():
        print(f"  {g}: top attribute {a} ({profile.set_index('community').loc[g, a]:.3f})")
    if other is not None:
        cmp = compare_profiles(profile, other)
        print(cmp.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"mean Spearman over {len(cmp)} communities: {cmp['spearman'].mean():.3f}")


if __name__ == "__main__":
    sys.exit(main())
