#!/usr/bin/env bash
# Downloads, here, the wheels the offline GPU machine lacks, so that scripts/device_check.sh can run there.
#
#   make device-wheels                      # -> wheels/ (git-ignored), prints its size
#   scripts/device_wheels.sh /tmp/wheels    # another folder
#
# That machine's python3 (3.12, x86_64) already holds torch, accelerate, einops, tensorboard, safetensors,
# scipy, scikit-learn, matplotlib, pytest and huggingface_hub (1.33, within diffusers' >= 1.32), requests,
# regex, filelock, numpy, pillow, zipp (docs/gpu.md). It lacks:
#   diffusers, captum, importlib_metadata (a diffusers requirement) and lazy-importer (importlib_metadata's);
#   zipp travels too (importlib_metadata needs >= 3.20; 10 kB is cheaper than finding out there).
# Versions come from constraints.txt. The folder is emptied first: two versions of one wheel stop the install.
# scripts/offline_install.py checks there that every requirement of these wheels is met.
set -euo pipefail

NAMES=(diffusers captum importlib_metadata lazy-importer zipp)
LIMIT_MIB=64  # what the device tool carries in all (working tree + carried folders)

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/wheels}"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"

specs=()
for name in "${NAMES[@]}"; do
  # constraints.txt spells names either way (importlib_metadata, lazy-importer): match both.
  pattern="^$(echo "$name" | sed 's/[-_]/[-_]/g')=="
  pin="$(grep -i -m1 "$pattern" "$root/constraints.txt" | cut -d';' -f1 | tr -d ' ')" || true
  [ -n "$pin" ] || { echo "error: $name has no pin in constraints.txt" >&2; exit 1; }
  specs+=("$pin")
done

mkdir -p "$dest"
rm -f "$dest"/*.whl
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest" "${specs[@]}"

bytes="$(cat "$dest"/*.whl | wc -c)"
count="$(ls "$dest"/*.whl | wc -l)"
mib="$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')"
ls -1 "$dest"/*.whl | xargs -n1 basename
echo "$dest: $count wheels, $mib MiB (${specs[*]})"
if [ "$bytes" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "error: $dest holds $mib MiB, more than the $LIMIT_MIB MiB the device tool carries" >&2
  exit 1
fi
