#!/usr/bin/env bash
# The deployment soak (issue 31; tests/test_soak.py): NODES SuperNodes (default 16) with warm workers, TLS and
# node auth, the SuperLink on its SQLite database, each in its own network namespace where the machine allows,
# ROUNDS rounds (default 20). Every round a SuperNode is killed with SIGKILL while it trains and started again;
# one SuperNode loses its network for DROP_S seconds (default 60); an unregistered SuperNode tries to join; the
# SuperLink is killed after round ROUNDS // 2 and the run resumed (resume=true). Then the same federation is
# simulated with the deployment's failures (replay_failures), SEEDS seeds (default 3). Writes REPORT (JSON).
# The short version: bash experiments/soak.sh 4 3 0 1 (= pytest -m soak).
#   bash experiments/soak.sh [NODES] [ROUNDS] [DROP_S] [SEEDS] [REPORT]
set -euo pipefail
cd "$(dirname "$0")/.."
FEDFIT_SOAK_NODES="${1:-16}" FEDFIT_SOAK_ROUNDS="${2:-20}" FEDFIT_SOAK_DROP_S="${3:-60}" FEDFIT_SOAK_SEEDS="${4:-3}" \
FEDFIT_SOAK_REPORT="${5:-soak-report.json}" FEDFIT_SOAK_TIMEOUT_S="${FEDFIT_SOAK_TIMEOUT_S:-45}" \
  .venv/bin/python -m pytest -q -s -p no:cacheprovider -m soak tests/test_soak.py 2>&1 | grep -vE "^\s*$"
