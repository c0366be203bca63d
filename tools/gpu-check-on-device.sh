#!/usr/bin/env bash
# `fusebench gpu-check` on a lent GPU machine, in one device call, from the bare checkout that travels there
# (no install, no network: the machine's own python3, torch, triton, pandas and pytest).
#
# The call, as a session with a lent device makes it (the device tool's `run`):
#   command:   bash tools/gpu-check-on-device.sh
#   timeout_s: 600
#   carry:     nothing: the tracked tree is all it needs. To include packages the image lacks (asv), download
#              their wheels into .whl/ (the device README's Notes say how; ignore .whl/ in .git/info/exclude)
#              and carry [".whl"]: this script installs them into a private folder first.
# What comes back under $OUT: summary.md (the verdicts) and gpu-check.tar.gz (the results store, log, JUnit
# XML, asv results); the README's "GPU check" section says how to read the archive back here.
#
# Dry run on a machine without CUDA: OUT=/tmp/gpu-check PYTHON=.venv/bin/python bash tools/gpu-check-on-device.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:?give the output folder as the argument or in OUT}}
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl \
        && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" \
        || echo "[gpu-check-on-device] the carried wheels did not install; going on without them"
fi

# The check stops itself once its step budgets are spent (the plan it prints first says when). This outer
# limit, well inside the call's 600 s, is the backstop: SIGTERM stops the running step and still packs OUT.
timeout -k 20 560 "$python" -m fusebench gpu-check "$out"
status=$?
ls -l "$out"
exit "$status"
