#!/usr/bin/env bash
# Raw PUT uploads with wrk against ringup and nginx (dav_methods PUT) on the same run: 16 KiB
# bodies at 100 and 1,000 connections, 10 MiB bodies at 50 connections, ringup also with
# FSYNC=true (nginx never fsyncs, so only the FSYNC=false rows get a ratio). Then the disk's
# ceiling with fio (O_DIRECT and buffered sequential writes) on the same filesystem, and
# ringup's peak RSS during the 10 MiB run. Prints markdown tables.
#
#   bench/put.sh [SECONDS]        # seconds per measurement, default 10
#   bench/put.sh SECONDS paths    # ringup alone: buffered vs splice vs O_DIRECT by body size
#
# The paths matrix runs one body size after another, each through the three raw-body paths
# (SPLICE_UPLOADS=false, SPLICE_UPLOADS=true, DIRECT_IO_THRESHOLD=1), same run, FSYNC=false;
# it is what sets the defaults of SPLICE_UPLOADS and DIRECT_IO_THRESHOLD.
#
# Use 5 or more: the first 10 MiB uploads of 50 connections finish together after 1-2 s, so a
# shorter run leaves the 10 MiB rows with few or no completed uploads. Numbers move a lot from
# run to run on a shared machine; compare ratios, and run it more than once.
#
# Run as root, the data lives on a fresh ext4 made for the run (a sparse image under var/,
# loop-attached with direct I/O), so no server pays for the host filesystem's history.
# Loopback only; every wrk, fio and server run is bounded in time. Each measurement writes
# into a fresh storage directory of its own (deleting many files slows later file creation on
# ext4 for minutes), all under one scratch directory in var/ that is removed at exit, with the
# scratch database; ringup's rows share one storage directory whose shard tree is made once
# before the first row (ringup init-storage), as a deployment would. Needs
# `tools/bootstrap --bench` (wrk, nginx-light, fio) and `make ringup`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-10}
matrix=${2:-main}
case $secs in
'' | *[!0-9]* | 0)
    echo "usage: bench/put.sh [SECONDS [paths]]" >&2
    exit 2
    ;;
esac
case $matrix in
main | paths) ;;
*)
    echo "usage: bench/put.sh [SECONDS [paths]]" >&2
    exit 2
    ;;
esac
small=16384
large=10485760
lua=$root/bench/put.lua
me=put.sh
BENCH_WORKERS=${BENCH_WORKERS:-2}
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

need wrk nginx fio ss
bench_setup

# --- one measurement --------------------------------------------------------------------------
# wrk_put PORT CONNS SECONDS SIZE TOKEN PREFIX OUT
wrk_put() {
    timeout $(($3 + 60)) wrk -t2 -c"$2" -d"$3s" --timeout 30s --latency -s "$lua" \
        "http://127.0.0.1:$1/" -- "$4" "$5" "$6" >"$7" 2>&1 || true
}

# rss_watch PID OUT: append "VmRSS(kB) descriptors connections" to OUT every 0.2 s until
# killed or PID is gone (connections: ESTABLISHED sockets to the server's port)
rss_watch() {
    local rss nfd conns
    while kill -0 "$1" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0)
        nfd=$(ls "/proc/$1/fd" 2>/dev/null | wc -l)
        conns=$(ss -Htn state established "( sport = :$port )" 2>/dev/null | wc -l)
        echo "$rss $nfd $conns" >>"$2"
        sleep 0.2
    done
}

rows=()
rss_idle=() rss_peak=()
ringup_dead=()

ringup_extra=()

# measure SCENARIO SERVER(ringup|nginx) FSYNC CONNS SIZE NAME [PATH]
# PATH (ringup only): buffered, splice or direct; default: the server's defaults
measure() {
    local scen=$1 srv=$2 fs=$3 conns=$4 size=$5 name=$6 path=${7:-} tok=- label out
    out=$tmp/$name.wrk
    fresh_cache
    case $path in
    buffered) ringup_extra=(--splice-uploads false --direct-io-threshold 0) ;;
    splice) ringup_extra=(--splice-uploads true --direct-io-threshold 0) ;;
    direct) ringup_extra=(--splice-uploads false --direct-io-threshold 1) ;;
    *) ringup_extra=() ;;
    esac
    if [ "$srv" = ringup ]; then
        start_ringup "$name" "$fs" "${ringup_extra[@]}"
        tok=$token
        label="ringup (FSYNC=$fs${path:+, $path})"
    else
        start_nginx "$name"
        label="nginx"
    fi
    log "$scen: $label, ${secs}s"
    # short warm-up into the same fresh directory, then flush it
    wrk_put "$port" 10 1 "$size" "$tok" warm "$tmp/$name.warm"
    settle
    local watcher=""
    if [ "$srv" = ringup ] && [ "$size" = "$large" ]; then
        rss_idle+=("$name:$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)")
        rss_watch "$pid" "$tmp/$name.rss" &
        watcher=$!
        pids+=("$watcher")
    fi
    wrk_put "$port" "$conns" "$secs" "$size" "$tok" m "$out"
    if [ -n "$watcher" ]; then
        stop "$watcher"
        rss_peak+=("$name:$label:$conns:$(awk '$1 > m { m = $1 } $2 > f { f = $2 } $3 > c { c = $3 } END { print m + 0 ":" f + 0 ":" c + 0 }' "$tmp/$name.rss" 2>/dev/null || echo 0:0:0)")
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        ringup_dead+=("$name")
        label="$label, died"
    fi
    stop "$pid"
    [ "$size" -lt 1048576 ] || drop_large

    local rps p99 bad errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p99=$(awk '$1 == "99%" {print $2}' "$out")
    bad=$(awk '/Non-2xx/ {print $NF}' "$out")
    errs=$(sed -n 's/.*Socket errors: //p' "$out")
    if [ -z "$rps" ]; then
        log "wrk gave no result for $name:"
        tail -n 5 "$out" >&2
    fi
    rows+=("$scen|$label|${rps:-0}|$size|${p99:-?}|${bad:-0}|${errs:-none}|$srv$fs")
}

if [ "$matrix" = paths ]; then
    # Rotate the order inside each size, so no path always runs first on a fresh disk.
    order=(buffered splice direct)
    for size in 65536 262144 1048576 4194304 10485760; do
        for p in "${order[@]}"; do
            measure "$((size / 1024)) KiB PUT, 50 conns" ringup false 50 "$size" "p-$p-$size" "$p"
        done
        order=("${order[@]:1}" "${order[0]}")
    done
    echo
    rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    echo "Raw PUT by write path, wrk -t2, ${secs}s per row, $workers workers, FSYNC=false (ringup $rev); MB = 10^6 bytes"
    echo
    echo "| scenario | server | uploads/s | MB/s | p99 | non-2xx | socket errors |"
    echo "|---|---|---|---|---|---|---|"
    for row in "${rows[@]}"; do
        IFS='|' read -r s label rps size p99 bad errs _ <<<"$row"
        mbs=$(awk -v r="$rps" -v z="$size" 'BEGIN { printf "%.1f", r * z / 1e6 }')
        echo "| $s | $label | $rps | $mbs | $p99 | $bad | $errs |"
    done
    for d in "${ringup_dead[@]}"; do echo "server exited during $d"; done
    exit 0
fi

# Alternate servers inside every cell; flip the order from cell to cell.
measure "16 KiB PUT, 100 conns" ringup false 100 "$small" c1-ringup
measure "16 KiB PUT, 100 conns" nginx - 100 "$small" c1-nginx
measure "16 KiB PUT, 1,000 conns" nginx - 1000 "$small" c2-nginx
measure "16 KiB PUT, 1,000 conns" ringup false 1000 "$small" c2-ringup
measure "16 KiB PUT, 1,000 conns" ringup true 1000 "$small" c2-ringup-fsync
measure "10 MiB PUT, 50 conns" ringup false 50 "$large" c3-ringup
measure "10 MiB PUT, 50 conns" nginx - 50 "$large" c3-nginx
measure "10 MiB PUT, 50 conns" ringup true 50 "$large" c3-ringup-fsync
# Memory and descriptors with 1,000 large uploads in flight at once.
measure "10 MiB PUT, 1,000 conns" ringup false 1000 "$large" c4-ringup

# --- ceiling ----------------------------------------------------------------------------------
fio_direct=$(fio_mbs 1)
fio_buffered=$(fio_mbs 0 --end_fsync=1)

# --- report -----------------------------------------------------------------------------------
ratio_of() { # SCENARIO: ringup FSYNC=false uploads/s over nginx uploads/s
    local r n row
    for row in "${rows[@]}"; do
        IFS='|' read -r s _ rps _ _ _ _ key <<<"$row"
        [ "$s" = "$1" ] || continue
        [ "$key" = ringupfalse ] && r=$rps
        [ "$key" = nginx- ] && n=$rps
    done
    awk -v a="${r:-0}" -v b="${n:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'
}
mbs_of() { # KEY SCENARIO: MB/s of that row
    local row
    for row in "${rows[@]}"; do
        IFS='|' read -r s _ rps size _ _ _ key <<<"$row"
        [ "$s" = "$2" ] && [ "$key" = "$1" ] && awk -v r="$rps" -v z="$size" 'BEGIN { printf "%.0f", r * z / 1e6 }'
    done
    return 0
}

echo
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
ngv=$(nginx -v 2>&1 | sed 's/.*version: //')
echo "Raw PUT uploads, wrk -t2, ${secs}s per row, $workers workers each (ringup $rev, $ngv); MB = 10^6 bytes"
echo
echo "| scenario | server | uploads/s | MB/s | p99 | non-2xx | socket errors | ratio ringup/nginx |"
echo "|---|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
    IFS='|' read -r s label rps size p99 bad errs key <<<"$row"
    mbs=$(awk -v r="$rps" -v z="$size" 'BEGIN { printf "%.1f", r * z / 1e6 }')
    ratio="—"
    [ "$key" = ringupfalse ] && ratio=$(ratio_of "$s")
    echo "| $s | $label | $rps | $mbs | $p99 | $bad | $errs | $ratio |"
done

big="10 MiB PUT, 50 conns"
r_nofs=$(mbs_of ringupfalse "$big")
r_fs=$(mbs_of ringuptrue "$big")
n_big=$(mbs_of nginx- "$big")
frac() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
echo
echo "Ceiling: fio sequential 1 MiB writes on the same filesystem as the servers (${loopdev:-repository filesystem}), 15 s each"
echo
echo "| write path | MB/s | ringup 10 MiB FSYNC=false ($r_nofs MB/s) | ringup 10 MiB FSYNC=true ($r_fs MB/s) | nginx 10 MiB ($n_big MB/s) |"
echo "|---|---|---|---|---|"
echo "| fio O_DIRECT (--direct=1) | $fio_direct | $(frac "$r_nofs" "$fio_direct") | $(frac "$r_fs" "$fio_direct") | $(frac "$n_big" "$fio_direct") |"
echo "| fio buffered (--direct=0 --end_fsync=1) | $fio_buffered | $(frac "$r_nofs" "$fio_buffered") | $(frac "$r_fs" "$fio_buffered") | $(frac "$n_big" "$fio_buffered") |"

echo
for v in "${rss_idle[@]}"; do
    n=${v%%:*}
    for w in "${rss_peak[@]}"; do
        [ "${w%%:*}" = "$n" ] || continue
        IFS=: read -r _ label conns peak fds open <<<"$w"
        awk -v l="$label" -v c="$conns" -v i="${v#*:}" -v p="$peak" -v f="$fds" -v o="$open" 'BEGIN {
            printf "%s, 10 MiB PUT at %d conns: RSS %.1f MiB before, %.1f MiB peak; at most %d process descriptors and %d established connections (every 0.2 s)\n", l, c, i / 1024, p / 1024, f, o }'
    done
done

# Anything ringup said at LOG_LEVEL=warn, and any process that died under load.
for f in "$tmp"/c*-ringup*.log; do
    [ -s "$f" ] || continue
    n=$(wc -l <"$f")
    echo
    echo "ringup stderr, $(basename "$f" .log) ($n lines, last 5):"
    echo '```'
    tail -n 5 "$f" | cut -c1-300
    echo '```'
done
for d in "${ringup_dead[@]}"; do echo "server exited during $d (see its stderr above)"; done
exit 0
