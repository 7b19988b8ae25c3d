#!/usr/bin/env bash
# The benchmarks behind README's "Speed and scale" table (issue 11), on an otherwise idle machine:
#   bash experiments/bench.sh [OUT_DIR]        (about 20 minutes on 2 cores)
# The default federation once; then each scale configuration alternated 3 times with its 20-client
# partner (20, 1,000, 20, 1,000, ...), so that a machine whose speed drifts affects both alike; the
# summary is the median round over all repetitions of a configuration.
set -euo pipefail
OUT="${1:-bench-results}"
F="${FEDFIT:-fedfit}"
mkdir -p "$OUT"
$F bench dataset=openclipart image_size=96 --rounds 3 --out "$OUT/default.json"   # the default federation until 2026-12-07
FM="dataset=fashion-mnist image_size=32 classes_per_client=2 clients_per_round=10 eval_clients=20"
for i in 1 2 3; do
  $F bench $FM shots=5 queries=5 num_clients=20 --rounds 5 --no-ray --out "$OUT/scale-20-$i.json"
  $F bench $FM shots=5 queries=5 num_clients=1000 --rounds 5 --no-ray --out "$OUT/scale-1000-$i.json"
done
for i in 1 2 3; do
  $F bench $FM shots=2 queries=1 num_clients=20 --rounds 5 --no-ray --out "$OUT/scale-20-small-$i.json"
  $F bench $FM shots=2 queries=1 num_clients=10000 --rounds 5 --no-ray --out "$OUT/scale-10000-$i.json"
done
python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
print(f"{'configuration':16} {'train_vs_bare':>13} {'round_vs_compute':>16} {'wire/payload':>12} {'s/round':>8} {'peak PSS GB':>11}")
for name in ["default", "scale-20", "scale-1000", "scale-20-small", "scale-10000"]:
    files = sorted(glob.glob(f"{out}/{name}.json") + glob.glob(f"{out}/{name}-[0-9].json"))
    js = [json.load(open(f)) for f in files]
    pairs = [p["ratio"] for j in js for p in j["paired"]["pairs"] if p["ratio"] is not None]
    rounds = [r["seconds"] for j in js for r in j["federation"]["per_round"] if r["round"] >= 1]
    print(f"{name:16} {statistics.median(pairs):13.3f} {statistics.median(j['round_vs_compute'] for j in js):16.3f} "
          f"{max(j['wire_vs_payload'] for j in js):12.4f} {statistics.median(rounds):8.2f} "
          f"{max(j['peak_pss_bytes'] for j in js) / 1e9:11.2f}")
PY
