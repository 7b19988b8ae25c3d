#!/usr/bin/env bash
# Seconds per deployed round with and without warm ClientApps, alternated (cold, warm, cold, warm): the
# 2-SuperNode deployment of tests/test_deployment.py (TLS, node auth, digits at 32 px, 2 rounds of 2 local
# steps), whose last line prints each round's seconds. Run it on an otherwise idle machine:
#   bash experiments/warm_clientapps.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
for i in $(seq "${1:-2}"); do
  for cold in 1 0; do
    FEDFIT_DEPLOY_COLD=$cold .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/test_deployment.py \
      -k superlink_and_two_supernodes 2>&1 | grep -E "^deployment \(|passed|failed"
  done
done
