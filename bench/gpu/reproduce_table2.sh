#!/usr/bin/env bash
# Table 2 at the paper's scale on a GPU worker (bench/gpu/README.md): runs the grids
# table2-mnist-full-gpu and / or table2-cifar-gpu with bench/bench_reproduce.py, resuming from
# the cells already in bench/results/reproduce/<grid>/cells, and copies the results to $OUT.
#
# Usage: bench/gpu/reproduce_table2.sh [GRID ...] [-- --max-cells K]
#   DATA=dir   folder with mnist_01.npz / cifar10_airplane_bird.npz (default: $RAB_SHARED_DATA,
#              else ../shared/data; that folder does not travel to a device machine, so copy
#              the files into an ignored folder of the repo, e.g. gpu-data/, and carry it).
set -euo pipefail
cd "$(dirname "$0")/../.."
grids=()
while [[ $# -gt 0 && "$1" != "--" ]]; do grids+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
[[ ${#grids[@]} -eq 0 ]] && grids=(table2-mnist-full-gpu table2-cifar-gpu)
export RAB_SHARED_DATA="${DATA:-${RAB_SHARED_DATA:-../shared/data}}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python bench/bench_reproduce.py --only "${grids[@]}" "$@"
if [[ -n "${OUT:-}" ]]; then
  for g in "${grids[@]}"; do
    mkdir -p "$OUT/reproduce/$g"
    cp "bench/results/reproduce_$g".{json,md} "$OUT/" 2>/dev/null || true
    cp -r "bench/results/reproduce/$g/cells" "$OUT/reproduce/$g/" 2>/dev/null || true
  done
fi
