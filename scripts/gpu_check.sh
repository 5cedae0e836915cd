#!/usr/bin/env bash
# GPU check (prepared; CI and the tests never need a GPU): on a machine with a CUDA GPU, search and retrain
# one SoC on full CIFAR-10 (45k train images) with automatic mixed precision, then print throughput (img/s)
# and wall time next to this project's CPU figures (bench/results). Budget: about 10 minutes on one H100.
#
#   bash scripts/gpu_check.sh                  # SOC=sd845 EPOCHS=10 BATCH=256 OUT=runs/gpu_check
#   RECORD=1 bash scripts/gpu_check.sh         # also record the figures (bench/results, docs/benchmarks.md)
#   GROUNDTRUTH=1 bash scripts/gpu_check.sh    # then the NAS-Bench-Macro harness (bench_groundtruth --device cuda)
#   EVIDENCE=1 bash scripts/gpu_check.sh       # then the evidence preset at the cifar10 budget (experiment=evidence_gpu:
#                                              # full CIFAR-10, 3 seeds, controls, a budget that ranks; <= 10 min)
#
# Environment: a venv in $GPU_VENV (default .venv-gpu) whose torch sees the GPU. Made on first use: from the
# machine's own CUDA torch when it has one (--system-site-packages, nothing downloaded), else torch==2.13.0
# from PyPI (its default wheel is the CUDA build) plus the project under constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SOC=${SOC:-sd845}
EPOCHS=${EPOCHS:-10}
BATCH=${BATCH:-256}
OUT=${OUT:-runs/gpu_check}
VENV=${GPU_VENV:-.venv-gpu}
export SPNAS_HOME=${SPNAS_HOME:-$PWD/.spnas}
T0=$(date +%s)

# the search must take device= (nas/search.py builds its Compute with training.devices): else it would run on the CPU
grep -q "resolve_compute" nas/search.py || {
  echo "gpu_check: nas/search.py does not take device= yet (see docs/distributed.md, 'In the search loop'); stopping"
  exit 1; }

has_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }

if ! { [ -x "$VENV/bin/python" ] && has_cuda "$VENV/bin/python"; }; then
  echo "== setting up $VENV"
  rm -rf "$VENV"
  if has_cuda python3; then
    python3 -m venv --system-site-packages "$VENV"          # the machine's CUDA torch, as installed
    "$VENV/bin/pip" install -q --no-deps -e . || true
    "$VENV/bin/pip" install -q -c constraints.txt -e . 2>/dev/null \
      || echo "   (offline: using the machine's packages for the project's other dependencies)"
  else
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.13.0                  # PyPI's default torch wheel is the CUDA build
    grep -v '^torch==' constraints.txt > "$VENV/constraints-gpu.txt"
    "$VENV/bin/pip" install -q -c "$VENV/constraints-gpu.txt" -e .
  fi
fi
PY="$VENV/bin/python"
has_cuda "$PY" || { echo "gpu_check: torch in $VENV sees no CUDA GPU (nvidia-smi: $(nvidia-smi -L 2>&1 | head -1))"; exit 6; }
"$PY" -c 'import torch; print("== torch", torch.__version__, "CUDA", torch.version.cuda, "on", torch.cuda.get_device_name(0),
"bf16" if torch.cuda.is_bf16_supported() else "fp16")'
"$PY" -m training.datasets unpack >/dev/null                 # CIFAR-10 from ../shared/datasets into $SPNAS_HOME/data
rm -rf "$OUT" && mkdir -p "$OUT"
THREADS=$(nproc)
COMMON=(data=cifar10 device=cuda amp=auto "threads=$THREADS" seed=0)

echo "== search: $SOC, full CIFAR-10, batch $BATCH, AMP"
S0=$(date +%s)
timeout 330 "$VENV/bin/spnas-search" "soc=$SOC" "${COMMON[@]}" "search.batch_size=$BATCH" "run_dir=$OUT/search" \
  > "$OUT/search.log" 2>&1 || { echo "search failed or exceeded 330 s; tail of $OUT/search.log:"; tail -5 "$OUT/search.log"; exit 1; }
S1=$(date +%s)

echo "== retrain: the derived net, $EPOCHS epochs, batch $BATCH, AMP"
timeout 240 "$VENV/bin/spnas-train" "arch=$OUT/search/arch.json" "${COMMON[@]}" "train.epochs=$EPOCHS" \
  "train.batch_size=$BATCH" "run_dir=$OUT/train" > "$OUT/train.log" 2>&1 \
  || { echo "retrain failed or exceeded 240 s; tail of $OUT/train.log:"; tail -5 "$OUT/train.log"; exit 1; }
R1=$(date +%s)

"$PY" - "$OUT" "$SOC" "$EPOCHS" "$BATCH" "$((S1 - S0))" "$((R1 - S1))" "$((R1 - T0))" "${RECORD:-0}" <<'EOF'
import json, sys
from pathlib import Path

out, soc, epochs, batch, search_s, train_s, total_s, rec = sys.argv[1:]
out = Path(out)
s = json.loads((out / "search" / "search_summary.json").read_text())
t = json.loads((out / "train" / "summary.json").read_text())
search_dev = (s.get("compute") or {}).get("device", "cpu (the search loop does not take device= yet)")
n_train = s["data"]["train"]
search_imgs = s.get("budget", {}).get("total_steps", 0) * s.get("budget", {}).get("batch_size", int(batch))
gpu = {"search_device": search_dev, "retrain_device": t["compute"]["device"], "amp": t["compute"]["amp"],
       "gpu": t["compute"].get("gpu"), "search_s": float(search_s), "retrain_s": float(train_s),
       "search_images_per_s": round(search_imgs / float(s["search_wall_s"]), 1) if search_imgs else None,
       "retrain_images_per_s": round(t["images_per_s"], 1), "retrain_epochs": int(epochs),
       "retrained_top1": t["test_top1"], "predicted_ms": s["predicted_ms"], "total_s": float(total_s),
       "train_images": n_train}
cpu = {}
res = Path("bench/results")
for line in reversed((res / "bench_search.jsonl").read_text().splitlines() if (res / "bench_search.jsonl").exists() else []):
    r = json.loads(line)
    row = next((x for x in r.get("rows", []) if x.get("soc") == soc), None)
    if row:
        cpu = {"search_s": row.get("search_s"), "retrain_s": row.get("retrain_s"), "command": r["command"]}
        break
for line in reversed((res / "bench_train.jsonl").read_text().splitlines() if (res / "bench_train.jsonl").exists() else []):
    cpu["train_images_per_s_mbv3_small"] = json.loads(line)["rows"][0].get("img_per_s")
    break
print(f"\n{'':24}{'this GPU':>16}{'CPU (bench/results)':>22}")
print(f"{'search wall (s)':24}{gpu['search_s']:>16.0f}{str(cpu.get('search_s', 'n/a')):>22}")
print(f"{'search img/s':24}{str(gpu['search_images_per_s']):>16}{'':>22}")
print(f"{'retrain wall (s)':24}{gpu['retrain_s']:>16.0f}{str(cpu.get('retrain_s', 'n/a')):>22}")
print(f"{'retrain img/s':24}{gpu['retrain_images_per_s']:>16}{str(cpu.get('train_images_per_s_mbv3_small', 'n/a')):>22}")
print(f"devices: search on {gpu['search_device']}, retrain on {gpu['retrain_device']} ({gpu['gpu']}), AMP {gpu['amp']}; "
      f"retrained top-1 {gpu['retrained_top1']:.4f} after {epochs} epochs; {total_s} s in all")
(out / "gpu_check.json").write_text(json.dumps({"gpu": gpu, "cpu": cpu}, indent=2) + "\n")
if rec == "1":
    from bench.common import record
    record("bench_gpu_check", f"GPU check: search + retrain of {soc} on full CIFAR-10 with AMP ({gpu['gpu']})",
           [{"where": f"GPU {gpu['gpu']}", "search_s": gpu["search_s"], "search_img_per_s": gpu["search_images_per_s"],
             "retrain_s": gpu["retrain_s"], "retrain_img_per_s": gpu["retrain_images_per_s"], "amp": gpu["amp"]},
            {"where": "CPU (2 cores, bench_search / bench_train)", "search_s": cpu.get("search_s"),
             "search_img_per_s": None, "retrain_s": cpu.get("retrain_s"),
             "retrain_img_per_s": cpu.get("train_images_per_s_mbv3_small"), "amp": "off"}],
           notes=f"scripts/gpu_check.sh: batch {batch}, {epochs} retrain epochs; search on {gpu['search_device']}.",
           command="RECORD=1 bash scripts/gpu_check.sh")
EOF

# The evidence preset at the budget that ranks (what 2 CPU cores cannot run in 75 minutes, docs/evidence.md):
# experiment=evidence_gpu on the GPU, its verdicts and budget check printed, recorded with RECORD=1.
if [ "${EVIDENCE:-0}" = "1" ]; then
  echo "== evidence preset at the cifar10 budget (experiment=evidence_gpu), limit 600 s"
  E0=$(date +%s)
  timeout 600 "$PY" -m bench.bench_pipeline --experiment evidence_gpu device=cuda amp=auto "threads=$THREADS" \
    "run_dir=$OUT/evidence" > "$OUT/evidence.log" 2>&1 \
    || { echo "evidence preset failed or exceeded 600 s (resumable: run again); tail of $OUT/evidence.log:";
         tail -5 "$OUT/evidence.log"; exit 1; }
  echo "   $(( $(date +%s) - E0 )) s; verdicts:"
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); [print("  ", h["text"]) for h in r["headline"]];
print("   budget ranks:", r["budget"]["ranks"], "; ".join(r["budget"]["reasons"]))' "$OUT/evidence/report.json"
  [ "${RECORD:-0}" = "1" ] || git checkout -- bench/results docs/benchmarks.md 2>/dev/null || true
fi

# The ground-truth harness (NAS-Bench-Macro, docs/groundtruth.md) at its default size on the GPU: the same
# seeds, targets and preset as on the CPU, so its judgements compare; wall time per part in its table.
if [ "${GROUNDTRUTH:-0}" = "1" ]; then
  echo "== ground-truth harness on the GPU (bench_groundtruth --device cuda), limit 600 s"
  timeout 600 "$PY" -m bench.bench_groundtruth --device cuda --out "$OUT/groundtruth" > "$OUT/groundtruth.log" 2>&1 \
    || { echo "harness failed or exceeded 600 s (finished searches are reused: run again); tail of $OUT/groundtruth.log:";
         tail -5 "$OUT/groundtruth.log"; exit 1; }
  grep -E "^- " "$OUT/groundtruth.log" | head -12
  [ "${RECORD:-0}" = "1" ] || git checkout -- bench/results docs/benchmarks.md 2>/dev/null || true
fi
