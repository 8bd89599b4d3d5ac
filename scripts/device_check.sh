#!/usr/bin/env bash
# The prepared GPU check (issue 8 §5): install, CUDA tests, GAN + diffusion benchmarks, a bf16 demo run.
#
#   scripts/device_check.sh results/gpu                 # on a GPU machine: ~5-8 minutes
#   make device-check RESULTS=results/gpu               # the same through make (installs .venv first)
#   scripts/device_check.sh /tmp/smoke --cpu-smoke      # dry check anywhere: tiny sizes, CPU, no install
#   PYTHON=python3 scripts/device_check.sh out --no-install   # use a Python that already has the deps
#
# Steps, each logged, all results in RESULTS_DIR (at most 8 files, so that they fit a device tool's $OUT):
#   env.txt           GPU, driver, Python, torch/CUDA versions, torch threads, the exact commands
#   install.log       `make install`: .venv with torch==2.13.0 and the pinned deps (on Linux x86_64 PyPI's
#                     torch wheel is the CUDA build; the CPU build on the development machines comes from
#                     their local wheel folder, both satisfy the same constraint torch==2.13.0)
#   tests.log         pytest -m gpu (trainer fp32/bf16, attribute on CUDA = CPU, diffusion step, timing)
#   gan.md            GAN benchmark: vanilla / grad / saliency / deeplift, batch 64 and 128, fp32 then bf16
#   diffusion.md      diffusion benchmark (plain vs D + saliency per importance mode), fp32 then bf16
#   demo.log          recipes/train_gan.py --config configs/gan/demo.yaml train.mixed_precision=bf16 (<= 2 min)
#   demo_samples.png  the demo's final sample grid
#   summary.md        one line per step: exit code and seconds
# The script goes on after a failed step and exits non-zero if any step failed.
set -uo pipefail

usage() { echo "usage: $0 RESULTS_DIR [--cpu-smoke] [--no-install]" >&2; exit 2; }
[ $# -ge 1 ] || usage
results="$1"; shift
smoke=0; install=1
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) smoke=1; install=0 ;;
    --no-install) install=0 ;;
    *) echo "error: unknown option '$arg'; expected --cpu-smoke or --no-install" >&2; usage ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$results" || { echo "error: cannot create results folder '$results'" >&2; exit 2; }
results="$(cd "$results" && pwd)"
cd "$root" || exit 2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1
summary="$results/summary.md"
printf '# Device check %s\n\n| step | exit | seconds |\n|---|---|---|\n' "$(date -u +%Y-%m-%dT%H:%MZ)" >"$summary"
failed=0

# step NAME LOG COMMAND...: runs COMMAND with its output appended to LOG, records exit code and time.
step() {
  local name="$1" log="$2"; shift 2
  local start=$SECONDS
  echo "== $name: $*" | tee -a "$log"
  "$@" >>"$log" 2>&1
  local rc=$?
  echo "| $name | $rc | $((SECONDS - start)) |" >>"$summary"
  echo "   exit $rc after $((SECONDS - start)) s (log: $log)"
  [ "$rc" -eq 0 ] || failed=1
  return 0
}

if [ "$install" -eq 1 ]; then
  step install "$results/install.log" make install
  PY="$root/.venv/bin/python"
else
  PY="${PYTHON:-$root/.venv/bin/python}"
  [ -x "$PY" ] || PY="$(command -v python3)"
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ "$smoke" -eq 1 ]; then
  # Tiny sizes on the CPU: proves every command of the real check runs, in a minute or two.
  device=(--cpu); gan_sizes=(--arch dcgan --width 8 --batch-sizes 8); rounds=(--steps 1 --warmup 1)
  diffusion=(--batch-sizes 4 --image-size 16 --unet-widths 16 32 --refill-size 4 --sampling-steps 2)
  demo=(model.g_width=8 model.d_width=8 train.batch_size=8 train.max_steps=4 train.log_every=2
        train.sample_every=2 train.checkpoint_every=0 train.num_samples=4 xai.log_every=0 run.cpu=true)
  demo_limit=300
else
  device=(); gan_sizes=(--arch dcgan paper_mlp --batch-sizes 64 128); rounds=(--steps 20 --warmup 5)
  diffusion=(--batch-sizes 32)
  demo=(train.checkpoint_every=0)
  demo_limit=150  # the "2-minute demo run" (1200 steps); a demo still running at 150 s is a failure (exit 124)
fi

{
  echo "date: $(date -u)"; echo "host: $(uname -a)"; echo "python: $PY"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device {torch.cuda.get_device_name(0)}, bf16 supported {torch.cuda.is_bf16_supported()}")
print(f"torch threads {torch.get_num_threads()}")
EOF
} >"$results/env.txt" 2>&1
cat "$results/env.txt"

step "gpu tests" "$results/tests.log" "$PY" -m pytest tests/gpu -m gpu -q -p no:cacheprovider -rs

methods=(--methods grad saliency deeplift)
for precision in no bf16; do
  step "gan benchmark ($precision)" "$results/benchmark.log" "$PY" recipes/benchmark.py --suite gan \
    "${gan_sizes[@]}" "${methods[@]}" "${rounds[@]}" "${device[@]}" --mixed-precision "$precision" \
    --markdown "$work/gan_$precision.md"
  step "diffusion benchmark ($precision)" "$results/benchmark.log" "$PY" recipes/benchmark.py --suite diffusion \
    "${diffusion[@]}" "${rounds[@]}" "${device[@]}" --mixed-precision "$precision" \
    --markdown "$work/diffusion_$precision.md"
done
for suite in gan diffusion; do
  for precision in no bf16; do
    cat "$work/${suite}_$precision.md" 2>/dev/null && echo
  done >"$results/$suite.md"
done

step "demo run (bf16)" "$results/demo.log" timeout "$demo_limit" "$PY" recipes/train_gan.py \
  --config configs/gan/demo.yaml train.mixed_precision=bf16 run.output_dir="$work/runs" run.name=demo_bf16 "${demo[@]}"
cp "$work/runs/demo_bf16/samples.png" "$results/demo_samples.png" 2>/dev/null

# The benchmark log is the tables' source; keep it inside the 8-file budget by folding it into tests.log.
{ echo; echo "== benchmark output"; cat "$results/benchmark.log"; } >>"$results/tests.log" 2>/dev/null
rm -f "$results/benchmark.log"
echo >>"$summary"
cat "$summary"
exit "$failed"
