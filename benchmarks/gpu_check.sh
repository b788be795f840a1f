#!/usr/bin/env bash
# The checks for a machine with an NVIDIA GPU and many cores, each part under a time limit:
#   tests       the test suite: every test that takes the `device` fixture runs on CUDA as well;
#   throughput  Breakout collection and end to end, W = 16 8 4 2 1 workers x 8 envs, with inference
#               in each worker and central on the GPU (benchmarks/throughput.py, --device cuda).
#
#   bash benchmarks/gpu_check.sh OUT [tests|throughput|all]     # all (the default) runs both
#
# OUT gets pytest.log, throughput.log and breakout/ (results.json at the end, and records.jsonl
# with each run's record as soon as it is measured, so that a part cut at its limit keeps what
# it reached). Settings, from the environment:
#   TEST_S, THROUGHPUT_S  each part's limit in seconds (defaults 240 and 540);
#   PYTEST_ARGS           more pytest arguments, e.g. "-n 8" where pytest-xdist is installed;
#   INFERENCE             the modes compared (default "worker central"; add central-thread to
#                         measure the server thread beside the server process).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT [tests|throughput|all]}
part=${2:-all}
case "$part" in
tests | throughput | all) ;;
*)
    echo "gpu_check.sh: unknown part '$part'; name tests, throughput or all." >&2
    exit 2
    ;;
esac
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2

python - <<'EOF' || exit 2
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
if [ "$part" != throughput ]; then
    # shellcheck disable=SC2086  # PYTEST_ARGS holds several arguments
    timeout "${TEST_S:-240}" python -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} 2>&1 | tee "$out/pytest.log"
    code=${PIPESTATUS[0]}
    echo "tests: exit $code$([ "$code" = 124 ] && echo ', cut at its time limit')"
    [ "$code" = 0 ] || status=1
fi
if [ "$part" != tests ]; then
    # shellcheck disable=SC2086  # INFERENCE holds several modes
    timeout "${THROUGHPUT_S:-540}" python benchmarks/throughput.py --env ALE/Breakout-v5 --workers 16 8 4 2 1 \
        --envs 8 --train-sweep --inference ${INFERENCE:-worker central} --device cuda --out "$out/breakout" 2>&1 |
        tee "$out/throughput.log"
    code=${PIPESTATUS[0]}
    echo "throughput: exit $code$([ "$code" = 124 ] && echo ', cut at its time limit: see breakout/records.jsonl')"
    [ "$code" = 0 ] || status=1
fi
exit $status
