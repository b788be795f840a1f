#!/usr/bin/env bash
# The checks for a machine with an NVIDIA GPU and many cores, each part under a time limit:
#   tests       the test suite: every test that takes the `device` fixture runs on CUDA as well;
#   throughput  Breakout collection and end to end, W = 16 8 4 2 1 workers x 8 envs, with inference
#               in each worker and central on the GPU (benchmarks/throughput.py, --device cuda);
#   async       Breakout end to end, 16 workers x 8 envs, STEPS env steps each: central inference
#               in --mode async against worker inference in sync mode (the asynchronous mode's
#               targets: 40k frames/s, env steps x 4, and 2x the sync run; OUT/async-*/summary.json).
#
#   bash benchmarks/gpu_check.sh OUT [tests|throughput|async|all]  # all (the default) runs the first two
#
# OUT gets pytest.log, throughput.log and breakout/ (results.json at the end, and records.jsonl
# with each run's record as soon as it is measured, so that a part cut at its limit keeps what
# it reached). Settings, from the environment:
#   TEST_S, THROUGHPUT_S, ASYNC_S  each part's limit in seconds (defaults 240, 480 and 540; run the
#                         parts in separate commands where one command may not last 12 minutes);
#   STEPS                 env steps of each async-part run (default 1000000);
#   PYTEST_ARGS           more pytest arguments, e.g. "-n 8" where pytest-xdist is installed;
#   PYTHON                the interpreter (default: python);
#   INFERENCE             the modes compared (default "worker central"; "worker central-thread
#                         central-process" also compares the server thread with the process).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT [tests|throughput|async|all]}
part=${2:-all}
python=${PYTHON:-python}
case "$part" in
tests | throughput | async | all) ;;
*)
    echo "gpu_check.sh: unknown part '$part'; name tests, throughput, async or all." >&2
    exit 2
    ;;
esac
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2

"$python" - <<'EOF' || exit 2
import os
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(
        f"gpu_check.sh: torch {torch.__version__} sees no CUDA device; "
        "run it on a machine with an NVIDIA GPU and a CUDA build of torch."
    )
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {os.cpu_count()} cores", flush=True)
EOF

status=0
# limited SECONDS NAME COMMAND...: the command under `timeout`, its output also in OUT/NAME.log.
# SIGTERM first (a training run saves and stops between updates), SIGKILL 30 s later.
limited() {
    local seconds=$1 name=$2
    shift 2
    timeout -k 30 "$seconds" "$@" 2>&1 | tee "$out/$name.log"
    local code=${PIPESTATUS[0]}
    case "$code" in
    0) echo "$name: passed" ;;
    124 | 137) echo "$name: cut at its time limit of $seconds s (exit $code); what it reached is in $out" ;;
    *) echo "$name: exit $code" ;;
    esac
    [ "$code" = 0 ] || status=1
}
if [ "$part" = tests ] || [ "$part" = all ]; then
    # shellcheck disable=SC2086  # PYTEST_ARGS holds several arguments
    limited "${TEST_S:-240}" pytest "$python" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-}
fi
if [ "$part" = throughput ] || [ "$part" = all ]; then
    # shellcheck disable=SC2086  # INFERENCE holds several modes
    limited "${THROUGHPUT_S:-480}" throughput "$python" benchmarks/throughput.py --env ALE/Breakout-v5 \
        --workers 16 8 4 2 1 --envs 8 --train-sweep --inference ${INFERENCE:-worker central} --device cuda \
        --out "$out/breakout"
fi
if [ "$part" = async ]; then
    breakout=(scripts/train.py --env ALE/Breakout-v5 --workers 16 --envs-per-worker 8 --steps "${STEPS:-1000000}"
        --device cuda --eval-episodes 0 --no-progress --overwrite)
    half=$((${ASYNC_S:-540} / 2))
    limited "$half" async-sync "$python" "${breakout[@]}" --inference worker --mode sync --out "$out/async-sync"
    limited "$half" async-async "$python" "${breakout[@]}" --inference central --mode async --out "$out/async-async"
    "$python" - "$out" <<'EOF'
import json
import sys
from pathlib import Path

rates = {}
for name in ("sync", "async"):
    summary = Path(sys.argv[1]) / f"async-{name}" / "summary.json"
    if summary.exists():
        rates[name] = json.loads(summary.read_text())["steps_per_s"]
        print(f"Breakout 16 x 8, {name}: {rates[name]:,.0f} env steps/s, {4 * rates[name]:,.0f} frames/s")
if len(rates) == 2:
    print(f"async (central) / sync (worker): {rates['async'] / rates['sync']:.2f}x; target 2x and 40,000 frames/s")
EOF
fi
exit $status
