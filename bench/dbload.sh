#!/usr/bin/env bash
# Files-row inserts per second through ringup's database slice, batched (one
# multi-row INSERT per loop turn) and row by row, on the same run, against a
# scratch database of the devstack's PostgreSQL that is dropped afterwards.
#   bench/dbload.sh [ROWS] [INFLIGHT]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-20000}
inflight=${2:-256}
cd "$root"
tools/devstack start >/dev/null
eval "$(tools/devstack env | sed 's/^/export /')"
host=${DATABASE_URL#*host=}
db="ringup_dbload_$$"
createdb -h "$host" "$db"
trap 'dropdb -h "$host" --if-exists --force "$db"' EXIT
export DATABASE_URL="postgresql:///$db?host=$host"
./ringup migrate >/dev/null

echo "| batching | rows | in flight | connections | rows/s | failed |"
echo "|---|---|---|---|---|---|"
for mode in off on off on; do
    line=$(build/bench/dbload --rows "$rows" --inflight "$inflight" --pool 4 --batch "$mode")
    rps=$(sed -n 's/.*rows_per_s=\([0-9]*\).*/\1/p' <<<"$line")
    failed=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$line")
    echo "| $mode | $rows | $inflight | 4 | $rps | $failed |"
done
echo
echo "rows in the table: $(psql -X -q -t -A -h "$host" -d "$db" -c 'select count(*) from files')"
