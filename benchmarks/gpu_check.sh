#!/usr/bin/env bash
# GPU readiness check (issue 10): one script, one table, under 8 minutes on a fresh GPU machine.
#
#   bash benchmarks/gpu_check.sh                # a GPU machine: everything on CUDA, nccl on every GPU
#   DEVICE=cpu bash benchmarks/gpu_check.sh     # dry run: the same steps, tiny, on the CPU (gloo, 2 ranks)
#
# Run from anywhere; it works in the repository root. Shared data: $TRAQPOINT_SHARED/data, else
# ../shared/data next to the repository. Steps (each under its own timeout, all under BUDGET_S):
#   1 install    pip install -e ".[test]" pinned to the torch already installed (the machine's CUDA build);
#                offline, it falls back to an editable install without dependencies (dry run: pip --dry-run)
#   2 cuda tests every test with "cuda" in its name (tests/frontend, tests/models); on the CPU they are skipped
#   3 speed      python -m benchmarks.frontend_speed --device cuda --batch 1,8,32 on kitti_mini/06
#                (latency pass + naive loop vs stream engine per batch size, in the same run)
#   4 vo         traqpoint-vo on kitti_mini/06 on CUDA (--scale gt, headless)
#   5 stage1     200 steps of training.stage1 under torchrun, one process per GPU (nccl)
#   6 stage2     200 steps of training.stage2 from step 5's weights, same launcher
# Outputs: $OUT (default gpu_check_out/): one log and JSON per step, table.txt. Exit code: the number
# of failed steps (0 = all passed).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHARED=${TRAQPOINT_SHARED:-$(cd "$ROOT/.." && pwd)/shared}
DATA=$SHARED/data
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$ROOT/gpu_check_out}
PY=${PYTHON:-python}
mkdir -p "$OUT"
: > "$OUT/steps.tsv"
export TRAQPOINT_SHARED=$SHARED PYTHONUNBUFFERED=1 TQDM_DISABLE=1

if [ "$DEVICE" = cpu ]; then  # dry run: tiny sizes, generous timeouts (a loaded 2-core CPU)
    BUDGET_S=${BUDGET_S:-3600}; NPROC=2; FRAMES=4; BATCHES=1,2; METHODS=traqpoint-lite,orb
    VO_FRAMES=(--max-frames 5); STEPS=2; TRAIN=(--batch_size 1 --training_res 64 96 --workers 0)
    SPEED=(--threads 1 --warmup 1); export OMP_NUM_THREADS=1  # one thread: 2 contend on a loaded CPU
    T_INSTALL=300; T_TESTS=900; T_SPEED=900; T_VO=900; T_TRAIN=900
else
    BUDGET_S=${BUDGET_S:-470}; FRAMES=51; BATCHES=1,8,32; METHODS=traqpoint-lite,xfeat,orb,sift,alike-t
    NPROC=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$NPROC" -ge 1 ] || NPROC=1
    VO_FRAMES=(); STEPS=200; TRAIN=(--workers 4); SPEED=(--warmup 3)
    T_INSTALL=120; T_TESTS=90; T_SPEED=120; T_VO=60; T_TRAIN=75
fi
TRAIN_DATA=("$DATA/images" "$DATA/kitti06_frames" "$DATA/tum_office")
SEQ=$DATA/kitti_mini/sequences/06
START=$(date +%s)

step() {  # step NAME TIMEOUT CMD...: run under min(TIMEOUT, budget left); log; record name, status, seconds
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET_S - ($(date +%s) - START)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -le 5 ]; then
        printf '%s\tskipped (time budget spent)\t0\n' "$name" >> "$OUT/steps.tsv"; return 1
    fi
    echo "== $name (timeout ${limit}s): $*" > "$OUT/$name.log"
    echo "== $name (timeout ${limit}s)"
    local t0=$(date +%s) rc
    timeout --kill-after=10 "$limit" "$@" >> "$OUT/$name.log" 2>&1
    rc=$?
    local status="ok"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="timeout after ${limit}s"
    [ $rc -ne 0 ] && [ "$status" = ok ] && status="failed (exit $rc)"
    printf '%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - t0))" >> "$OUT/steps.tsv"
    tail -n 3 "$OUT/$name.log"
    return $rc
}

do_install() {  # run through `bash -c` (timeout cannot run a shell function)
    if [ "$DEVICE" = cpu ]; then
        "$PY" -m pip install --dry-run --no-deps --no-build-isolation -e . && return 0
        return 1
    fi
    local torch_version
    torch_version=$("$PY" -c "import torch; print(torch.__version__)") || { echo "no torch installed"; return 1; }
    echo "torch==$torch_version" > "$OUT/constraints.txt"  # keep the machine's CUDA build
    "$PY" -m pip install -q -c "$OUT/constraints.txt" -e ".[test]" && return 0
    echo "full install failed (offline?): editable install without dependencies"
    "$PY" -m pip install -q --no-deps --no-build-isolation -e .
}

[ -d "$SEQ" ] || echo "warning: $SEQ not found: the speed and vo steps will fail (set TRAQPOINT_SHARED)"
"$PY" - <<EOF
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs {torch.cuda.device_count()}, device $DEVICE, ranks $NPROC")
if "$DEVICE" != "cpu" and not torch.cuda.is_available():
    print("warning: DEVICE=$DEVICE but torch sees no GPU: the CUDA steps will fail (DEVICE=cpu for a dry run)")
EOF

export -f do_install
export DEVICE PY OUT
step install "$T_INSTALL" bash -c do_install
step cuda_tests "$T_TESTS" "$PY" -m pytest -q -rs -p no:cacheprovider tests/frontend tests/models -k cuda \
    --junitxml="$OUT/cuda_tests.xml"
step speed "$T_SPEED" "$PY" -m benchmarks.frontend_speed --device "$DEVICE" --batch "$BATCHES" --data "$SEQ" \
    --methods "$METHODS" --num-kp 1024 --frames "$FRAMES" "${SPEED[@]}" --precision auto --json "$OUT/speed.json"
step vo "$T_VO" "$PY" -m vo_app.cli --sequence "$SEQ" --headless --device "$DEVICE" --scale gt --num-kp 1024 \
    "${VO_FRAMES[@]}" --out "$OUT/vo06"
step stage1 "$T_TRAIN" torchrun --standalone --nproc_per_node="$NPROC" -m training.stage1 --distributed \
    --data "${TRAIN_DATA[@]}" --max-steps "$STEPS" --ckpt_every "$STEPS" --log_every 10 "${TRAIN[@]}" \
    --out "$OUT/stage1"
step stage2 "$T_TRAIN" torchrun --standalone --nproc_per_node="$NPROC" -m training.stage2 --distributed \
    --data "${TRAIN_DATA[@]}" --weights "$OUT/stage1/stage1.pt" --max-steps "$STEPS" --ckpt_every "$STEPS" \
    --log_every 10 "${TRAIN[@]}" --out "$OUT/stage2"

"$PY" - "$OUT" "$START" <<'EOF' | tee "$OUT/table.txt"
"""One table: each step's status and time, and the numbers it produced."""
import csv, json, sys, time, xml.etree.ElementTree as ET
from pathlib import Path

out, start = Path(sys.argv[1]), int(sys.argv[2])

def read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

def last_row(path):
    try:
        rows = list(csv.DictReader(path.open()))
    except OSError:
        return None
    return rows[-1] if rows else None

notes = {}
try:
    suite = ET.parse(out / "cuda_tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    notes["cuda_tests"] = f"{suite.get('tests')} tests, {suite.get('failures')} failed, {suite.get('errors')} errors, {suite.get('skipped')} skipped"
except (OSError, ET.ParseError, IndexError):
    pass
speed = read(out / "speed.json")
if speed:
    cells = []
    for name, m in speed["methods"].items():
        prec = speed["config"]["methods"][name].get("precision")
        cells.append(f"{name} {m['fps_frontend']:.1f} fps ({prec})")
    for name, sweep in speed.get("batches", {}).items():
        b = max(sweep, key=int)
        cells.append(f"{name} b{b}: naive {sweep[b]['naive']:.1f} / stream {sweep[b]['pipelined']:.1f} img/s")
    notes["speed"] = "; ".join(cells)
vo = read(out / "vo06" / "results.json")
if vo:
    m = vo["metrics"]
    ate = m.get("ate_unaligned_pct_path", m.get("ate_pct_path"))
    notes["vo"] = f"{m.get('frames')} frames, {m.get('fps') or 0:.1f} fps, ATE {ate if ate is None else round(ate, 2)} % of path, AKTL {m.get('aktl', 0):.2f}"
for stage, log in (("stage1", "log_stage1.csv"), ("stage2", "log_stage2.csv")):
    row = last_row(out / stage / log)
    if row:
        keep = [k for k in ("step", "total", "accuracy", "reward", "entropy", "steps_per_s") if k in row]
        notes[stage] = ", ".join(f"{k} {float(row[k]):.3g}" for k in keep)

rows = [line.rstrip("\n").split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line]
machine = speed["machine"] if speed else {}
print(f"gpu_check: {machine.get('gpu') or 'no GPU'} | {machine.get('cpu', '?')} | torch {machine.get('torch', '?')}"
      f" | total {time.time() - start:.0f} s")
print(f"{'step':<11} {'status':<26} {'s':>5}  result")
for name, status, secs in rows:
    print(f"{name:<11} {status:<26} {secs:>5}  {notes.get(name, '')}")
EOF
exit "$(grep -vc "	ok	" "$OUT/steps.tsv")"
