#!/usr/bin/env bash
# The prepared GPU check (issues 8 and 18): CUDA tests, GAN + diffusion benchmarks, a bf16 demo run.
#
#   scripts/device_check.sh results/gpu --no-install   # offline GPU machine: its python3 + carried wheels/
#   scripts/device_check.sh results/gpu                # a GPU machine with a registry: `make install` first
#   scripts/device_check.sh /tmp/smoke --cpu-smoke     # dry run anywhere: tiny sizes, CPU, .venv (tested)
#
# --no-install runs on $PYTHON (default: python3, the interpreter that holds the machine's CUDA torch). If
# $WHEELS (default: wheels/, made here by `make device-wheels`) holds wheels, scripts/offline_install.py
# installs them with `pip --no-index --no-deps --target` into a temporary folder put first on PYTHONPATH and
# checks their requirements; then it checks that every module the check needs imports. A failure there is
# one "error:" line and exit 1: nothing runs against a half-installed Python. docs/gpu.md has the commands.
#
# The whole check stays within $BUDGET seconds (default 480, 8 minutes): each step gets its own limit or
# what is left, whichever is smaller; a step that finds no time left is recorded as skipped and fails.
# Results in RESULTS_DIR, five files (a device tool brings back at most eight):
#   summary.md        GPU, driver, Python, torch/CUDA versions, then one line per step: exit code and seconds
#   log.txt           every step's output: install, pytest -m gpu, both benchmarks, the demo
#   gan.md            GAN benchmark: vanilla / grad / saliency / deeplift, batch 64 and 128, fp32 then bf16
#   diffusion.md      diffusion benchmark (plain vs D + saliency per importance mode), fp32 then bf16
#   demo_samples.png  the bf16 demo run's final sample grid
# After a failed step the check goes on, and exits 1 if any step failed.
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
budget="${BUDGET:-$([ "$smoke" -eq 1 ] && echo 1500 || echo 480)}"  # the smoke: a contended CPU
deadline=$((SECONDS + budget))
summary="$results/summary.md"
log="$results/log.txt"
: >"$log"
printf '| step | exit | seconds |\n|---|---|---|\n' >"$work/steps.md"
failed=0

# step NAME LIMIT COMMAND...: runs COMMAND (at most LIMIT s, or what is left of the budget) into log.txt.
step() {
  local name="$1" limit="$2"; shift 2
  local left=$((deadline - SECONDS)) start=$SECONDS rc
  [ "$limit" -le "$left" ] || limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "| $name | skipped: the ${budget} s budget is spent | 0 |" >>"$work/steps.md"
    echo "== $name: skipped, the ${budget} s budget is spent" | tee -a "$log"
    failed=1
    return 0
  fi
  echo "== $name (limit ${limit} s): $*" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  echo "| $name | $rc | $((SECONDS - start)) |" >>"$work/steps.md"
  echo "   exit $rc after $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || failed=1
  return 0
}

if [ "$install" -eq 1 ]; then
  step install 400 make install
  PY="$root/.venv/bin/python"
else
  if [ "$smoke" -eq 1 ]; then
    PY="${PYTHON:-$root/.venv/bin/python}"  # the development machine's python3 holds no torch
  else
    PY="${PYTHON:-python3}"
  fi
  command -v "$PY" >/dev/null || { echo "error: no Python '$PY'; set PYTHON=/path/to/python3" >&2; exit 1; }
  wheels="${WHEELS:-$root/wheels}"
  site=()
  if compgen -G "$wheels/*.whl" >/dev/null; then
    site=(--wheels "$wheels" --target "$work/site")
    export PYTHONPATH="$work/site:$root${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
  fi
  # The first failed install (or missing module) stops the check with offline_install.py's one line.
  echo "== offline install: $PY scripts/offline_install.py ${site[*]}" | tee -a "$log"
  start=$SECONDS
  if ! "$PY" scripts/offline_install.py "${site[@]}" >>"$log" 2>"$work/install.err"; then
    cat "$work/install.err" >>"$log"
    tail -n 1 "$work/install.err" >&2
    exit 1
  fi
  tail -n 1 "$log"
  echo "| offline install | 0 | $((SECONDS - start)) |" >>"$work/steps.md"
fi

if [ "$smoke" -eq 1 ]; then
  # Tiny sizes on the CPU: proves every command of the real check runs.
  device=(--cpu); gan_sizes=(--arch dcgan --width 8 --batch-sizes 8); rounds=(--steps 1 --warmup 1)
  diffusion=(--batch-sizes 4 --image-size 16 --unet-widths 8 16 --refill-size 4 --sampling-steps 2)
  demo=(model.g_width=8 model.d_width=8 train.batch_size=8 train.max_steps=4 train.log_every=2
        train.sample_every=2 train.checkpoint_every=0 train.num_samples=4 xai.log_every=0 run.cpu=true)
  limits=(300 300 600 300)  # tests, GAN, diffusion (bf16 is emulated on a CPU: widths 8, 16 take ~40 s), demo
else
  device=(); gan_sizes=(--arch dcgan paper_mlp --batch-sizes 64 128); rounds=(--steps 20 --warmup 5)
  diffusion=(--batch-sizes 32)
  demo=(train.checkpoint_every=0)
  limits=(150 60 60 150)  # the demo is the "2-minute demo run" (1200 steps): still running at 150 s fails
fi

{
  echo "# Device check $(date -u +%Y-%m-%dT%H:%MZ)"; echo
  echo '```'
  echo "host: $(uname -srm)"; echo "python: $PY"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device {torch.cuda.get_device_name(0)}, bf16 supported {torch.cuda.is_bf16_supported()}")
print(f"torch threads {torch.get_num_threads()}")
EOF
  echo '```'
} >"$work/env.md" 2>&1
cat "$work/env.md"

step "gpu tests" "${limits[0]}" "$PY" -m pytest tests/gpu -m gpu -q -p no:cacheprovider -rs

methods=(--methods grad saliency deeplift)
for precision in no bf16; do
  step "gan benchmark ($precision)" "${limits[1]}" "$PY" recipes/benchmark.py --suite gan \
    "${gan_sizes[@]}" "${methods[@]}" "${rounds[@]}" "${device[@]}" --mixed-precision "$precision" \
    --markdown "$work/gan_$precision.md"
  step "diffusion benchmark ($precision)" "${limits[2]}" "$PY" recipes/benchmark.py --suite diffusion \
    "${diffusion[@]}" "${rounds[@]}" "${device[@]}" --mixed-precision "$precision" \
    --markdown "$work/diffusion_$precision.md"
done
for suite in gan diffusion; do
  for precision in no bf16; do
    cat "$work/${suite}_$precision.md" 2>/dev/null && echo
  done >"$results/$suite.md"
done

step "demo run (bf16)" "${limits[3]}" "$PY" recipes/train_gan.py --config configs/gan/demo.yaml \
  train.mixed_precision=bf16 run.output_dir="$work/runs" run.name=demo_bf16 "${demo[@]}"
cp "$work/runs/demo_bf16/samples.png" "$results/demo_samples.png" 2>/dev/null

{ cat "$work/env.md"; echo; cat "$work/steps.md"; echo; echo "total: $SECONDS s of a ${budget} s budget"; } >"$summary"
cat "$summary"
exit "$failed"
