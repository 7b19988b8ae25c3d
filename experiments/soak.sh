#!/usr/bin/env bash
# The deployment soak (issue 31): FEDFIT_SOAK_NODES SuperNodes (default 16) with warm workers, TLS and node
# auth, the SuperLink on its SQLite database, FEDFIT_SOAK_ROUNDS rounds (default 20); a SuperNode killed with
# SIGKILL and restarted after every round, the SuperLink killed after round rounds // 2 and the run resumed
# (resume=true). The short version: bash experiments/soak.sh 4 3 (= pytest -m soak). Prints one summary line.
#   bash experiments/soak.sh [NODES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
FEDFIT_SOAK_NODES="${1:-16}" FEDFIT_SOAK_ROUNDS="${2:-20}" .venv/bin/python -m pytest -q -s -p no:cacheprovider \
  -m soak tests/test_deployment.py 2>&1 | grep -E "^soak:|passed|failed|^E "
