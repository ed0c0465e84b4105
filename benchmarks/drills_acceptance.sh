#!/usr/bin/env bash
# Step 4's acceptance figures, in one quiet sequence on one deployment (run it alone on the
# machine: other processes invalidate the figures). Writes docs/results/; then
#   python benchmarks/results_table.py readme README.md
# rewrites the README's tables from it.
#   capacity; replica-crash x3 at 80 % of it (>= 6,000 requests each);
#   db-primary-loss x3 and zone-outage x3 at 50 % (>= 3,000 each); overload at twice it.
set -u
cd "$(dirname "$0")/.."
SD=${SD:-$(mktemp -d)/lcha}
R=${R:-docs/results}
mkdir -p "$R"
uptime
lcha up --demo --port 0 --state-dir "$SD" || exit 1
trap 'lcha down --state-dir "$SD"' EXIT
lcha bench capacity --state-dir "$SD" --json "$R/capacity.json"
CAP=$(python -c "import json;print(json.load(open('$R/capacity.json'))['cluster']['capacity_rps'])")
R80=$(python -c "print(round($CAP*0.8))"); R50=$(python -c "print(round($CAP*0.5))")
D80=$(python -c "import math;print(math.ceil(6000/$R80))")
D50=$(python -c "import math;print(max(60, math.ceil(3000/$R50)))")
for i in 1 2 3; do
  sleep 20; uptime; lcha drill replica-crash --state-dir "$SD" --rps "$R80" --duration "$D80" \
    --json "$R/drill-replica-crash-$i.json"
done
for s in db-primary-loss zone-outage; do
  for i in 1 2 3; do
    sleep 20; uptime; lcha drill "$s" --state-dir "$SD" --rps "$R50" --duration "$D50" \
      --json "$R/drill-$s-$i.json"
  done
done
sleep 10; uptime; lcha drill overload --state-dir "$SD" --rps "$CAP" --duration 60 \
  --json "$R/drill-overload.json"
