#!/usr/bin/env bash
# recipes/smollm2-135m-persian-gpu.yaml on a lent GPU machine, in two device calls.
#
# Why two calls: the base (a 98 MB GGUF), the pinned wheels, and the CPU main line's prepared data and tokenizer
# stages come to ~120 MB, and one call carries at most 64 MiB. A machine keeps its /tmp while it stays warm (30 s
# after a call), so the first call parks its half there and measures training tokens/s on the recipe's model
# shape; the second brings the rest, sizes the steps to its time budget by that measurement, and runs the recipe
# from model_extend (the data and tokenizer stages are CPU work and come from the CPU main line, so both lines
# train the same tokenizer on the same data).
#
# Here, once (network to PyPI; RUN is the CPU main line's run folder, DATA the shared data root):
#   bash bench/gpu_recipe.sh prep GGUF RUN DATA      → .gpu1/ and .gpu2/, both ignored through .git/info/exclude
# Then back to back, the second call sent as soon as the first one answers:
#   run(command="bash bench/gpu_recipe.sh stash", carry=[".gpu1"], timeout_s=300)
#   run(command="bash bench/gpu_recipe.sh run", carry=[".gpu2"], timeout_s=600)
# `run` returns $OUT/summary.md (the report), $OUT/run.log, $OUT/budget.json (steps chosen, seconds per stage)
# and $OUT/results.tar.gz (pipeline.json, every stage's eval results and training metrics, the report folder).
# LG_SECONDS (default 500) is run's wall-clock budget; LG_TRAIN (default 50,80,25) the seconds for align,
# pretrain and instruct that the steps are sized to. Off a GPU, LG_DRY=1 runs the same path on CPU with 2 steps
# per stage and 2 examples per task (a check of the script, not of the numbers; 316 s on the 2-core machine).
# Run on one H200 on 2026-11-30: docs/BENCHMARKS.md and docs/REPLICATION.md, "The same method on one GPU".
set -uo pipefail
cd "$(dirname "$0")/.."
RECIPE=recipes/smollm2-135m-persian-gpu.yaml
RUN=runs/smollm2-135m-persian-gpu
STASH=/tmp/lg-stash
SPLIT=45000000  # bytes of the compressed GGUF in the first call; the rest goes with the second
WHEELS="transformers==5.23.0 tokenizers==0.23.3 peft==0.21.2 gguf==0.19.0 regex==2026.11.19"
export PYTHONUNBUFFERED=1

prep() {
  local gguf=$1 run=$2 data=$3
  [ -f "$gguf" ] && [ -d "$run/tokenizer_extend" ] && [ -d "$data" ] || { echo "usage: prep GGUF RUN DATA" >&2; exit 2; }
  grep -qx '/.gpu1/' .git/info/exclude 2>/dev/null || printf '/.gpu1/\n/.gpu2/\n' >> .git/info/exclude
  rm -rf .gpu1 .gpu2 && mkdir -p .gpu1/whl .gpu2
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu1/whl $WHEELS || exit 1
  xz -T2 -9 -c "$gguf" > .gpu2/base.gguf.xz || exit 1
  head -c $SPLIT .gpu2/base.gguf.xz > .gpu1/base.part1
  tail -c +$((SPLIT + 1)) .gpu2/base.gguf.xz > .gpu2/base.part2
  (sha256sum < "$gguf" | cut -d' ' -f1) > .gpu2/base.gguf.sha256
  rm .gpu2/base.gguf.xz
  python3 - "$run" "$data" <<'EOF' || exit 1
# The stages travel as uncompressed parquet inside one xz stream: 3.5x smaller than the snappy parts, since the
# Quran pairs repeat each verse across translations and xz's window sees that. The evaluated files alone go along.
import shutil, subprocess, sys, tempfile
from pathlib import Path
import pyarrow.parquet as pq
sys.path.insert(0, "src")
from langgraft.eval.records import data_files
from langgraft.eval.tasks import load_task, resolve_tasks
from langgraft.pipeline.recipe import load_recipe
from langgraft.pipeline.stages import task_items
run, data = Path(sys.argv[1]), Path(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    for stage in ("data", "tokenizer", "tokenizer_extend"):
        shutil.copytree(run / stage, Path(tmp) / stage)
    for part in Path(tmp).rglob("*.parquet"):
        pq.write_table(pq.read_table(part), part, compression="none")
    subprocess.run(f"tar -C {tmp} -cf - data tokenizer tokenizer_extend | xz -T2 -9 > .gpu2/stages.tar.xz",
                   shell=True, check=True)
plan = load_recipe("recipes/smollm2-135m-persian-gpu.yaml", base_dir=".")
files = set()
for path in resolve_tasks(task_items(plan)):
    spec = load_task(path)
    for d in filter(None, (spec.data, spec.shots_data)):  # the examples, and where in-context shots come from
        files.update(str(f.relative_to(data)) for f in data_files(d, data, spec.name))
files.update(str(Path(t).relative_to("../shared/data")) for t in plan.recipe.eval.texts.values())
subprocess.run(["tar", "-C", str(data), "-cJf", ".gpu2/evaldata.tar.xz", *sorted(files)], check=True)
print(f"prep: {len(files)} evaluated files")
EOF
  du -cb .gpu1/* .gpu1/whl/* .gpu2/* | sort -n | tail -12
}

stash() {
  mkdir -p "$STASH" && cp .gpu1/base.part1 "$STASH/" || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STASH/site" \
    .gpu1/whl/*.whl || exit 1
  export PYTHONPATH="$STASH/site"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  python3 -c "import torch, transformers, peft, tokenizers; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'tokenizers', tokenizers.__version__)" | tee -a "$OUT/gpu.txt"
  # the recipe's model shape and batch, random weights: tokens/s of align and pretrain, ours and the baseline
  python3 bench/gpu_train.py --shape smollm2 --micro-batch 32 --compile off --steps 10 --warmup 3 --peers modules_to_save \
    --out "$STASH" 2>&1 | tee "$OUT/probe.log"
  cp "$STASH/gpu_train.json" "$OUT/" 2>/dev/null
  ls -la "$STASH"
}

collect() {
  [ -d "$RUN" ] || return
  cp "$RUN/report/summary.md" "$OUT/summary.md" 2>/dev/null
  (cd "$RUN" && tar -czf "$OUT/results.tar.gz" --exclude='*.safetensors' --exclude='*.pt' --exclude=checkpoints \
     pipeline.json langgraft.log eval report */train 2>/dev/null)
}

run() {
  local t0=$SECONDS budget=${LG_SECONDS:-500} dry=${LG_DRY:-}
  if [ ! -f "$STASH/base.part1" ] || { [ -z "$dry" ] && [ ! -f "$STASH/gpu_train.json" ]; }; then
    echo "run: $STASH has no first half (the machine was given back after stash): run stash again first" >&2
    exit 3
  fi
  export PYTHONPATH="$STASH/site:$PWD/src"
  trap collect EXIT
  mkdir -p "$OUT"
  cat "$STASH/base.part1" .gpu2/base.part2 | xz -dc > /tmp/lg-base.gguf || exit 1
  [ "$(sha256sum < /tmp/lg-base.gguf | cut -d' ' -f1)" = "$(cat .gpu2/base.gguf.sha256)" ] \
    || { echo "run: the reassembled GGUF does not match its sha256" >&2; exit 1; }
  rm -rf models/SmolLM2-135M-Instruct "$RUN" /tmp/lg-data && mkdir -p "$RUN" /tmp/lg-data
  python3 -m langgraft import-gguf /tmp/lg-base.gguf --out models/SmolLM2-135M-Instruct || exit 1
  xz -dc .gpu2/stages.tar.xz | tar -C "$RUN" -xf - && tar -C /tmp/lg-data -xJf .gpu2/evaldata.tar.xz || exit 1
  local steps
  steps=$(python3 - "$RECIPE" "$STASH/gpu_train.json" "${LG_TRAIN:-50,80,25}" "$dry" <<'EOF'
# max_steps per stage: the recipe's, lowered where the probe's tokens/s (x 0.7 for what the probe leaves out:
# data loading, logging, the end-of-stage validation) would not finish it in the stage's seconds
import json, sys, yaml
recipe, probe, seconds, dry = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4]
r = yaml.safe_load(open(recipe))
rates = {} if dry else {s: v["ours"]["tokens_per_s"] for s, v in json.load(open(probe))["results"].items()}
out = {}
for stage, secs in zip(("align", "pretrain", "instruct"), map(float, seconds)):
    o = dict(x.split("=", 1) for x in r[stage]["overrides"])
    tokens = int(o["micro_batch_size"]) * int(o["data.block_size"])
    rate = rates.get(stage, rates.get("pretrain", 0.0))
    rate = rate if rate > 0 else 30000.0  # the probe's run failed (NaN): a conservative guess, not no training
    steps = 2 if dry else min(int(o["max_steps"]), max(10, int(rate * 0.7 * secs / tokens)))
    if dry:  # CPU: one block per step
        o["micro_batch_size"] = "1"
    o["max_steps"], o["checkpoint_every"] = str(steps), str(max(1, steps // 2))
    out[stage] = {"max_steps": steps, "tokens_per_step": tokens, "probe_tokens_per_s": rate,
                  "overrides": "[" + ", ".join(f"{k}={v}" for k, v in o.items()) + "]"}
print(json.dumps(out))
EOF
) || exit 1
  echo "$steps" > "$OUT/budget.json"
  local args=(eval.data_root=/tmp/lg-data eval.texts.fa=/tmp/lg-data/ntrex/NTREX-128/newstest2019-ref.fas.txt
              eval.texts.en=/tmp/lg-data/ntrex/NTREX-128/newstest2019-src.eng.txt)
  for stage in align pretrain instruct; do
    args+=("$stage.overrides=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['$stage']['overrides'])" "$steps")")
  done
  [ -n "$dry" ] && args+=(eval.device=cpu eval.limit=2 eval.batch_size=2)
  echo "run: setup took $((SECONDS - t0)) s; $((budget - SECONDS + t0)) s left for the recipe"
  timeout --signal=INT --kill-after=15 $((budget - SECONDS + t0)) python3 -m langgraft run "$RECIPE" "${args[@]}" \
    --from model_extend 2>&1 | tr '\r' '\n' | grep -v -e "Loading weights" -e "Writing model shards" \
    -e "examples (.*ETA" | tee "$OUT/run.log"
  local rc=${PIPESTATUS[0]}
  echo "run: exit $rc after $((SECONDS - t0)) s"
  python3 - "$RUN/pipeline.json" "$OUT/budget.json" "$((SECONDS - t0))" <<'EOF'
import json, sys
from pathlib import Path
p = Path(sys.argv[1])
budget = json.load(open(sys.argv[2]))
budget["stages"] = json.loads(p.read_text())["stages"] if p.exists() else {}
budget["wall_s"] = int(sys.argv[3])
Path(sys.argv[2]).write_text(json.dumps(budget, indent=1))
EOF
  return "$rc"
}

case "${1:-}" in
  prep) shift; prep "$@" ;;
  stash) OUT=${OUT:-/tmp/lg-gpu-out}; mkdir -p "$OUT"; stash ;;
  run) OUT=${OUT:-/tmp/lg-gpu-out}; run ;;
  *) echo "usage: bash bench/gpu_recipe.sh prep GGUF RUN DATA | stash | run" >&2; exit 2 ;;
esac
