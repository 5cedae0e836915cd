"""Single-Path NAS on CIFAR-10 at 32x32 for sd845 and sd808: derived archs, predicted latencies and
retrained accuracies, and where the two derived archs differ and what the tables say there.

    python -m bench.bench_search [--experiment cifar10]

Runs the pipeline preset restricted to the two SoCs (no baselines); stages are shared with a full
`spnas-pipeline experiment=cifar10` run in the same run folder.
"""

from __future__ import annotations

import argparse

from bench.common import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default="cifar10")
    ap.add_argument("--socs", nargs=2, default=["sd845", "sd808"])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=10 (same as the pipeline run)")
    args = ap.parse_args()
    import spnas
    from latency_tables.lookup.keys import ops_of
    from latency_tables.lookup.predictor import predict_latency_ms
    from latency_tables.lookup.table import LatencyTable
    from search_spaces import ArchSpec, SearchSpace
    from spnas.app.pipeline.run import run_pipeline
    from spnas_core.config import to_plain

    cfg = spnas.compose("pipeline", [f"experiment={args.experiment}", f"socs=[{','.join(args.socs)}]",
                                     "baselines=[]", "report_dir=${run_dir}/bench_search", *args.overrides])
    rep = run_pipeline(cfg)
    space = SearchSpace.from_config(cfg.space)
    rows, choices = [], {}
    stages = {e["stage"]: e["wall_s"] for e in rep["provenance"]["stages"]}
    for r in rep["rows"]:
        arch = ArchSpec.from_string(r["arch"])
        choices[r["soc"]] = space.encode(arch)
        rows.append({"soc": r["soc"], "choices": " ".join(choices[r["soc"]]), "pred_ms_own_table": round(r["predicted_ms"], 2),
                     **{f"pred_ms_{s}": round(predict_latency_ms(arch.replace(resolution=224), LatencyTable.load(s)), 2)
                        for s in args.socs},
                     "retrained_top1": round(r["top1"], 4), "search_s": round(stages.get(f"search/{r['soc']}", 0)),
                     "retrain_s": round(stages.get(f"train/{r['model']}", 0))})
    a, b = args.socs
    over = (" " + " ".join(args.overrides)) if args.overrides else ""
    diff = [i for i, (x, y) in enumerate(zip(choices[a], choices[b])) if x != y]
    ta, tb = LatencyTable.load(a), LatencyTable.load(b)
    why = []
    for i in diff:
        slot = space.slots[i]
        keys = {}
        for c in ("k3_e3", "k5_e6"):
            arch = space.decode([c if j == i else "k3_e3" for j in range(space.num_layers)], 224, 1.0, 10)
            keys[c] = next(op.key for op in ops_of(arch) if op.block_index == slot.block_index)
        sa = ta.ms(keys["k5_e6"]) / ta.ms(keys["k3_e3"])
        sb = tb.ms(keys["k5_e6"]) / tb.ms(keys["k3_e3"])
        why.append(f"L{i} ({a}: {choices[a][i]}, {b}: {choices[b][i]}; k5e6/k3e3 cost ratio {sa:.2f} on {a} vs {sb:.2f} on {b})")
    record("bench_search", f"Search on CIFAR-10 32x32 for {a} and {b} (pipeline experiment={args.experiment}{over})", rows,
           notes=(f"Budget: {cfg.search.steps} search steps ({cfg.search.warmup_fraction:.0%} warm-up) on "
                  f"{rep['provenance']['data'].get('train')} training images, loss {cfg.search.loss.name} with lambda "
                  f"{cfg.search.latency_lambda} and target {to_plain(cfg.search.target_fraction_of)}; retrain "
                  f"{cfg.train.epochs} epochs. The derived archs differ at {len(diff)} of {space.num_layers} layers"
                  + (": " + "; ".join(why) if why else "") + "."),
           extra={"winners": rep["winners"]})


if __name__ == "__main__":
    main()
