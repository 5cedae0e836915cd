"""Photo search that means something: Grocery recall@1 of every model of a pipeline run, with intervals.

    python -m bench.bench_photo_search --run runs/pipeline/cifar10

Reads the run's retrieval stages (nothing is re-run). Before the product-domain fine-tuning, the
cifar10 preset's embedders (classifiers trained on CIFAR-10 at 32 px, pooled features) reached a
train-gallery recall@1 of 0.056-0.070 (record of `python -m bench.bench_pipeline --experiment cifar10
train.epochs=10 'baselines=[mobilenet_v2]'` at commit b1698e2) and the demo's catalogue recall@1 was
0.027 (sd845 winner) / 0.049 (MobileNetV2). Targets: every model at least 5x its earlier recall@1,
and each SoC's winner within the interval of, or above, MobileNetV2 at lower predicted latency.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import record

BEFORE_TRAIN_R1 = {"spnas-sd845": 0.066, "spnas-sd670": 0.067, "spnas-sd808": 0.058, "spnas-sd801": 0.066,
                   "spnas-host": 0.056, "mobilenet_v2": 0.070}
BEFORE_CATALOGUE_R1 = {"spnas-sd845": 0.027, "mobilenet_v2": 0.049}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/pipeline/cifar10")
    args = ap.parse_args()
    rep = json.loads((Path(args.run) / "report.json").read_text())
    rows, seen = [], set()
    for r in rep["rows"]:
        if r["model"] in seen:
            continue
        seen.add(r["model"])
        before = BEFORE_TRAIN_R1.get(r["model"])
        rows.append({"model": r["model"], "R@1_train": round(r["recall@1"], 3),
                     "R@1_train_95%": f"[{r['recall@1_ci'][0]:.3f}, {r['recall@1_ci'][1]:.3f}]",
                     "R@1_catalogue": round(r["catalogue_recall@1"], 3),
                     "R@1_catalogue_95%": f"[{r['catalogue_recall@1_ci'][0]:.3f}, {r['catalogue_recall@1_ci'][1]:.3f}]",
                     "mAP@10_train": round(r["mAP@10"], 3), "before_R@1_train": before,
                     "x_before": round(r["recall@1"] / before, 1) if before else None,
                     "x_before_catalogue": (round(r["catalogue_recall@1"] / BEFORE_CATALOGUE_R1[r["model"]], 1)
                                            if r["model"] in BEFORE_CATALOGUE_R1 else None),
                     "finetune_top1": r.get("finetune_top1")})
    five = all(x["x_before"] is None or x["x_before"] >= 5 for x in rows)
    verdicts = []
    for c in rep.get("retrieval_comparison", []):
        d = c.get("train")
        row = next(r for r in rep["rows"] if r["soc"] == c["soc"] and r["kind"] == "spnas")
        faster = row["d_latency_pct"] is not None and row["d_latency_pct"] < 0
        ok = d is not None and (d["differ"] is False or d["difference"] > 0) and faster
        verdicts.append(f"{c['soc']}: winner R@1 {d['winner_r1']:.3f} vs MobileNetV2 {d['mbv2_r1']:.3f} "
                        f"(difference {d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]) at "
                        f"{row['d_latency_pct']:+.1f}% predicted latency: {'met' if ok else 'NOT met'}")
    notes = (f"Run `{args.run}` ({rep['experiment']}): {rep['provenance'].get('finetune')}; "
             f"{rep['provenance'].get('retrieval_split')}. 95% bootstrap intervals over the test queries. "
             f"Every model >= 5x its earlier train-gallery recall@1: {'met' if five else 'NOT met'}. Winner vs "
             f"MobileNetV2 (paired bootstrap, same queries): " + "; ".join(verdicts) + ".")
    record("bench_photo_search", f"Photo search: Grocery recall@1 of every model ({rep['experiment']} preset)", rows,
           notes=notes, command=f"python -m bench.bench_photo_search --run {args.run}")


if __name__ == "__main__":
    main()
