#!/usr/bin/env bash
# The main job (the README's first command runs `make demo`, which sets up first, then this):
#   1. convert the three offline pretrained towers (MiniLM-L6, Whisper tiny.en, EfficientNet-Lite0)
#   2. build the Tux Paint stamps dataset (real images, human-written descriptions, speech, sound effects)
#   3. train CMAN (frozen towers + LoRA + a frozen Whisper recogniser whose transcripts join the audio + fusion
#      transformer + contrastive loss) under `accelerate launch`
#   4. evaluate all six directions and composed queries on the test splits, write plots, and reload the
#      saved folder with AutoModel in a fresh process to check it reproduces the stored test metrics
# Everything lands in outputs/; the log of this script is outputs/demo/demo.log.
# Re-running continues from the last complete checkpoint of an interrupted run (set FRESH=1 to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
CONFIG=${CONFIG:-recipes/configs/cman_stamps.yaml}
OUT=${OUT:-outputs/demo}
# A run still training into $OUT (say, after its launcher was killed) holds it: stop here rather than delete or
# train beside it.
[[ -d $OUT ]] && { $PY -m recipes.utils.run_lock "$OUT" || exit 1; }
[[ ${FRESH:-0} == 1 ]] && rm -rf "$OUT"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/demo.log") 2>&1

timings=()
step() {  # step NAME COMMAND...: run a step and record its wall time
  local name=$1 started=$SECONDS
  shift
  echo "== [$name] $*"
  "$@"
  timings+=("$name $((SECONDS - started))")
}

step towers $PY -m recipes.towers --output_dir outputs/towers
step dataset $PY -m recipes.data.stamps --output_dir outputs/data/stamps
# accelerate launch pins OMP_NUM_THREADS to 1 unless told otherwise: give the one process every core.
step train_and_evaluate $PY -m accelerate.commands.launch --config_file recipes/accelerate_configs/single_process.yaml \
  --num_cpu_threads_per_process "$(nproc)" recipes/train_retrieval.py "$CONFIG" --output_dir "$OUT"
step reload_check $PY recipes/evaluate_retrieval.py --model "$OUT" --dataset outputs/data/stamps \
  --splits test --output_dir "$OUT/reload_check" --check_against "$OUT/eval_results.json"

echo
echo "Time per step (s):"
printf '  %s\n' "${timings[@]}"
printf '%s\n' "${timings[@]}" | awk '{print "{\"step\": \"" $1 "\", \"seconds\": " $2 "}"}' > "$OUT/timings.jsonl"
# The training step's own phases (transcription, training, test evaluation, plots), from the recipe.
if [[ -f "$OUT/run_timings.json" ]]; then
  $PY -c 'import json, sys; [print(json.dumps({"step": "train_and_evaluate/" + k, "seconds": v})) for k, v in json.load(open(sys.argv[1])).items()]' \
    "$OUT/run_timings.json" | tee -a "$OUT/timings.jsonl"
fi
echo "CMAN model, processor, code, eval_results.json and plots: $(cd "$OUT" && pwd)"
