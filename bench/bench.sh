#!/usr/bin/env bash
# bench/bench.sh: `make bench`. ringup against nginx (dav PUT to the same disk, worker_processes
# = cores) on the same run, driven by the load generator of bench/load/ (build/bench/ringup-load):
#
#   16 KiB PUT at 10, 100 and 1,000 connections, 1 MiB PUT at 100, 10 MiB PUT at 50,
#   multipart 16 KiB at 1,000 (ringup only: nginx has no multipart handler), 10,000 idle
#   connections; ringup with FSYNC=false beside nginx (which never fsyncs), FSYNC=true as its
#   own row.
#
# Also in the same run: the machine's ceilings (fio sequential writes on the storage
# filesystem, iperf3 over loopback, bench/fsops storing 16 KiB files with nothing else
# running) with ringup's rates as fractions of them, and a cross-check of ringup-load against
# wrk on one scenario (they must agree within 10 %). Prints one markdown table; writes
# bench/results/<UTC time>.json, .md and .png (throughput and p99 against concurrency,
# gnuplot).
#
#   bench/bench.sh                    # BENCH_SECS (default 8) seconds per row
#
# Loopback only; every run is bounded in time and the whole stays under 15 minutes. Needs
# `tools/bootstrap --bench` and `make ringup build/bench/ringup-load build/bench/fsops` (make
# bench does both).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
me=bench.sh
secs=${BENCH_SECS:-8}
load=$root/build/bench/ringup-load
fsops=$root/build/bench/fsops
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

need wrk nginx fio gnuplot iperf3 ss
for b in "$load" "$fsops"; do
    [ -x "$b" ] || {
        log "$b is missing; run make build/bench/ringup-load build/bench/fsops"
        exit 1
    }
done
bench_setup
results=$root/bench/results
mkdir -p "$results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
rows=$tmp/rows.jsonl
: >"$rows"
hz=$(getconf CLK_TCK)

# sample_rss OUT PID...: the processes' summed VmRSS (kB) every 0.25 s until killed
sample_rss() {
    local out=$1
    shift
    while :; do
        rss_kb "$@" >>"$out"
        sleep 0.25
    done
}

# cell SCENARIO SERVER FSYNC KIND CONNS SIZE NAME: one row
#   SERVER ringup|nginx, KIND put|multipart|idle, SIZE bytes (0 for idle)
cell() {
    local scen=$1 srv=$2 fs=$3 kind=$4 conns=$5 size=$6 name=$7
    local label out=$tmp/$name.json verify=0.01 sampler t0 t1 procs rc=0
    fresh_cache
    if [ "$srv" = ringup ]; then
        start_ringup "$name" "$fs"
        label="ringup (FSYNC=$fs)"
    else
        start_nginx "$name"
        label="nginx"
        verify=0
    fi
    procs=$(server_pids "$pid")
    log "$scen: $label, ${secs}s"
    if [ "$kind" != idle ]; then
        # a short warm-up into the same storage, then flush it
        timeout 60 "$load" --quiet -c 10 -d 1 -s "$size" -T "$token" --verify 0 "$kind" \
            "http://127.0.0.1:$port" >/dev/null 2>&1 || true
        settle
    fi
    # shellcheck disable=SC2086
    sample_rss "$tmp/$name.rss" $procs &
    sampler=$!
    pids+=("$sampler")
    # shellcheck disable=SC2086
    t0=$(cpu_ticks $procs)
    if [ "$kind" = idle ]; then
        timeout $((secs + 120)) "$load" --quiet --json -c "$conns" -d "$secs" "$kind" \
            "http://127.0.0.1:$port" >"$out" 2>"$tmp/$name.err" || rc=$?
    else
        timeout $((secs + 120)) "$load" --quiet --json -c "$conns" -d "$secs" -s "$size" \
            -T "$token" --verify "$verify" "$kind" "http://127.0.0.1:$port" \
            >"$out" 2>"$tmp/$name.err" || rc=$?
    fi
    # shellcheck disable=SC2086
    t1=$(cpu_ticks $procs)
    stop "$sampler"
    [ "$rc" = 0 ] || log "$name: ringup-load exit status $rc: $(tail -n 2 "$tmp/$name.err" | tr '\n' ' ')"
    kill -0 "$pid" 2>/dev/null || label="$label, died"
    stop "$pid"
    [ "$size" -lt 1048576 ] || drop_large
    python3 - "$out" "$tmp/$name.rss" "$scen" "$label" "$srv$fs" "$kind" "$conns" "$size" \
        "$(((t1 - t0)))" "$hz" >>"$rows" <<'PY'
import json, sys
out, rssf, scen, label, key, kind, conns, size, ticks, hz = sys.argv[1:]
try:
    r = json.load(open(out))
except (OSError, ValueError):
    r = {}
peak = max([int(x) for x in open(rssf).read().split()] or [0])
lat = r.get("latency_us") or {}
errors = sum((r.get("errors") or {}).values())
bad = sum(v for k, v in (r.get("status") or {}).items()
          if not (k in ("200", "201", "204")))
secs = r.get("duration_s") or 0
gb = (r.get("mb_per_s") or 0) * secs / 1000.0
cpu = int(ticks) / float(hz)
print(json.dumps({
    "scenario": scen, "server": label, "key": key, "kind": kind, "connections": int(conns),
    "size": int(size), "requests": r.get("requests", 0),
    "requests_per_s": r.get("requests_per_s", 0), "mb_per_s": r.get("mb_per_s", 0),
    "p50_ms": lat.get("p50", 0) / 1000.0, "p99_ms": lat.get("p99", 0) / 1000.0,
    "errors": errors + bad, "open_at_end": r.get("open_at_end"),
    "rss_mib_peak": peak / 1024.0, "cpu_s": cpu,
    "cpu_s_per_gb": (cpu / gb) if gb > 0 else None, "load": r}))
PY
}

# --- the matrix: servers alternate inside each scenario, the order flips between scenarios ---
k16=16384
m1=1048576
m10=10485760
cell "16 KiB PUT, 10 conns" ringup false put 10 $k16 a-ringup
cell "16 KiB PUT, 10 conns" nginx - put 10 $k16 a-nginx
cell "16 KiB PUT, 100 conns" nginx - put 100 $k16 b-nginx
cell "16 KiB PUT, 100 conns" ringup false put 100 $k16 b-ringup
cell "16 KiB PUT, 100 conns" ringup true put 100 $k16 b-ringup-fsync
cell "16 KiB PUT, 1,000 conns" ringup false put 1000 $k16 c-ringup
cell "16 KiB PUT, 1,000 conns" nginx - put 1000 $k16 c-nginx
cell "16 KiB PUT, 1,000 conns" ringup true put 1000 $k16 c-ringup-fsync
cell "1 MiB PUT, 100 conns" nginx - put 100 $m1 d-nginx
cell "1 MiB PUT, 100 conns" ringup false put 100 $m1 d-ringup
cell "1 MiB PUT, 100 conns" ringup true put 100 $m1 d-ringup-fsync
cell "10 MiB PUT, 50 conns" ringup false put 50 $m10 e-ringup
cell "10 MiB PUT, 50 conns" nginx - put 50 $m10 e-nginx
cell "10 MiB PUT, 50 conns" ringup true put 50 $m10 e-ringup-fsync
cell "multipart 16 KiB, 1,000 conns" ringup false multipart 1000 $k16 f-ringup
cell "multipart 16 KiB, 1,000 conns" ringup true multipart 1000 $k16 f-ringup-fsync
cell "10,000 idle conns" nginx - idle 10000 0 g-nginx
cell "10,000 idle conns" ringup false idle 10000 0 g-ringup

# --- cross-check: wrk and ringup-load against one server, one scenario -----------------------
# In the order wrk, ringup-load, ringup-load, wrk, so a drift of the machine over the four
# runs (a growing store, writeback) weighs on both tools alike; each tool's mean is compared.
# Each run starts from a dropped page cache: the page cache filling up over the four would
# otherwise slow the last one most.
start_ringup x-ringup false
log "cross-check: 16 KiB PUT, 100 conns, wrk and ringup-load twice each (ABBA), ${secs}s each"
x_wrk=0
x_load=0
for t in wrk load load wrk; do
    fresh_cache
    if [ "$t" = wrk ]; then
        timeout $((secs + 60)) wrk -t2 -c100 -d"${secs}s" --timeout 30s -s "$root/bench/put.lua" \
            "http://127.0.0.1:$port/" -- $k16 "$token" "x$RANDOM" >"$tmp/x-wrk.out" 2>&1 || true
        v=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/x-wrk.out")
        x_wrk=$(awk -v a="$x_wrk" -v b="${v:-0}" 'BEGIN { print a + b / 2 }')
    else
        timeout $((secs + 120)) "$load" --quiet --json -c 100 -d "$secs" -s $k16 -T "$token" \
            --verify 0 put "http://127.0.0.1:$port" >"$tmp/x-load.json" 2>"$tmp/x-load.err" || true
        v=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("requests_per_s", 0))' \
            "$tmp/x-load.json" 2>/dev/null || echo 0)
        x_load=$(awk -v a="$x_load" -v b="${v:-0}" 'BEGIN { print a + b / 2 }')
    fi
done
stop "$pid"

# --- ceilings ------------------------------------------------------------------------------
FIO_SECS=10
fio_direct=$(fio_mbs 1)
fio_buffered=$(fio_mbs 0 --end_fsync=1)
iport=$(free_port)
iperf3 -s -B 127.0.0.1 -p "$iport" -1 >"$tmp/iperf-s.log" 2>&1 &
ipid=$!
pids+=("$ipid")
sleep 0.5
log "iperf3 over loopback, 5 s"
timeout 30 iperf3 -c 127.0.0.1 -p "$iport" -t 5 -J >"$tmp/iperf.json" 2>&1 || true
stop "$ipid"
loop_mbs=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.0f" % (j["end"]["sum_received"]["bits_per_second"] / 8e6))' \
    "$tmp/iperf.json" 2>/dev/null || echo 0)
# The filesystem's own rate for 16 KiB files, one thread per worker, no network, no database:
# ringup's steps (O_TMPFILE in a shard, write, linkat) and nginx's (open, write, close, rename
# into one directory). "files_per_s cpu_us_per_file" of each, or "0 0".
fsops_rate() {
    fresh_cache
    log "fsops --mode $1, 5 s"
    timeout 60 "$fsops" --threads "$workers" --secs 5 --size $k16 --mode "$1" "$data/ringup" \
        2>>"$tmp/fsops.err" | awk '{ print $12, $14 }' | grep . || echo "0 0"
}
fs_tmpfile=$(fsops_rate tmpfile)
fs_rename=$(fsops_rate rename)

# --- report --------------------------------------------------------------------------------
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
ngv=$(nginx -v 2>&1 | sed 's/.*version: //')
python3 - "$rows" "$results/$stamp" "$secs" "$workers" "$rev" "$ngv" "$fio_direct" \
    "$fio_buffered" "$loop_mbs" "$x_wrk" "$x_load" "${loopdev:-repository filesystem}" \
    "$fs_tmpfile" "$fs_rename" <<'PY'
import json, sys
(rowsf, base, secs, workers, rev, ngv, fio_d, fio_b, loop, x_wrk, x_load, fsname, fs_tmp,
 fs_ren) = sys.argv[1:]
fs_tmp = [float(x) for x in (fs_tmp.split() + ["0", "0"])[:2]]
fs_ren = [float(x) for x in (fs_ren.split() + ["0", "0"])[:2]]
rows = [json.loads(l) for l in open(rowsf) if l.strip()]
fio_d, fio_b, loop = float(fio_d or 0), float(fio_b or 0), float(loop or 0)
x_wrk, x_load = float(x_wrk or 0), float(x_load or 0)

def peer(r):
    for n in rows:
        if n["scenario"] == r["scenario"] and n["key"] == "nginx-":
            return n
    return None

lines = []
lines.append("ringup %s vs %s, %s s per row, %s workers each, ringup-load (io_uring) as the "
             "client; MB = 10^6 body bytes; storage: fresh ext4 (%s)" % (rev, ngv, secs, workers,
                                                                         fsname))
lines.append("")
lines.append("| scenario | server | uploads/s | MB/s | p99 | errors | server RSS peak | "
             "CPU s/GB | ratio ringup/nginx |")
lines.append("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    n = peer(r)
    if r["kind"] == "idle":
        ups = "%s open at end" % r["open_at_end"]
        mbs = "—"
        p99 = "%.1f ms (first GET)" % r["p99_ms"]
    else:
        ups = "%.0f" % r["requests_per_s"]
        mbs = "%.1f" % r["mb_per_s"]
        p99 = "%.1f ms" % r["p99_ms"]
    cpu = "%.1f" % r["cpu_s_per_gb"] if r["cpu_s_per_gb"] else "—"
    ratio = "—"
    if r["key"] == "ringupfalse":
        if n is None:
            ratio = "no nginx peer"
        elif r["kind"] == "idle":
            ratio = "RSS %.2f" % (r["rss_mib_peak"] / n["rss_mib_peak"]) if n["rss_mib_peak"] else "?"
        elif n["requests_per_s"]:
            ratio = "%.2f" % (r["requests_per_s"] / n["requests_per_s"])
    lines.append("| %s | %s | %s | %s | %s | %d | %.1f MiB | %s | %s |" % (
        r["scenario"], r["server"], ups, mbs, p99, r["errors"], r["rss_mib_peak"], cpu, ratio))

big = [r for r in rows if r["scenario"] == "10 MiB PUT, 50 conns"]
lines.append("")
lines.append("Ceilings measured in this run: fio sequential 1 MiB writes on the storage "
             "filesystem %.0f MB/s (O_DIRECT), %.0f MB/s (buffered + fsync at end); iperf3 "
             "over loopback %.0f MB/s." % (fio_d, fio_b, loop))
for r in big:
    f = lambda a, b: "%.2f" % (a / b) if b else "?"
    lines.append("- %s, 10 MiB at 50 conns: %.0f MB/s = %s of fio O_DIRECT, %s of fio buffered, "
                 "%s of loopback TCP" % (r["server"], r["mb_per_s"], f(r["mb_per_s"], fio_d),
                                         f(r["mb_per_s"], fio_b), f(r["mb_per_s"], loop)))
lines.append("")
lines.append("Small-file ceiling measured in this run (build/bench/fsops: %s threads storing 16 KiB "
             "files with blocking calls, no network, no database, 5 s): ringup's steps (O_TMPFILE in "
             "a shard, write, linkat) %.0f files/s at %.1f µs of CPU each; nginx's steps (open, "
             "write, close, rename into one directory) %.0f files/s at %.1f µs each." % (
                 workers, fs_tmp[0], fs_tmp[1], fs_ren[0], fs_ren[1]))
for r in rows:
    if r["kind"] == "put" and r["size"] == 16384 and r["connections"] == 1000:
        ceil = fs_ren[0] if r["key"] == "nginx-" else fs_tmp[0]
        lines.append("- %s, 16 KiB at 1,000 conns: %.0f uploads/s = %s of its steps' ceiling" % (
            r["server"], r["requests_per_s"],
            "%.2f" % (r["requests_per_s"] / ceil) if ceil else "?"))
agree = abs(x_load - x_wrk) / x_wrk if x_wrk else 1.0
lines.append("")
lines.append("Cross-check, 16 KiB PUT at 100 conns on one ringup (FSYNC=false), each tool "
             "twice (wrk, ringup-load, ringup-load, wrk): wrk %.0f uploads/s, ringup-load %.0f "
             "uploads/s (means): %.1f %% apart (%s)." % (
                 x_wrk, x_load, agree * 100, "agree within 10 %" if agree <= 0.10 else
                 "DISAGREE by more than 10 %"))
text = "\n".join(lines) + "\n"
sys.stdout.write(text)
open(base + ".md", "w").write(text)
json.dump({"revision": rev, "nginx": ngv, "seconds_per_row": int(secs), "workers": int(workers),
           "rows": rows, "ceilings": {"fio_direct_mb_s": fio_d, "fio_buffered_mb_s": fio_b,
                                      "loopback_mb_s": loop,
                                      "fsops_tmpfile_files_s": fs_tmp[0],
                                      "fsops_tmpfile_cpu_us": fs_tmp[1],
                                      "fsops_rename_files_s": fs_ren[0],
                                      "fsops_rename_cpu_us": fs_ren[1]},
           "cross_check": {"wrk_requests_per_s": x_wrk, "ringup_load_requests_per_s": x_load,
                           "relative_difference": agree}},
          open(base + ".json", "w"), indent=1)
# data for the plot: 16 KiB PUT at each concurrency, per server
with open(base + ".dat", "w") as f:
    for key, title in (("ringupfalse", "ringup FSYNC=false"), ("ringuptrue", "ringup FSYNC=true"),
                       ("nginx-", "nginx")):
        f.write("# %s\n" % title)
        for r in sorted((r for r in rows if r["key"] == key and r["kind"] == "put"
                         and r["size"] == 16384), key=lambda r: r["connections"]):
            f.write("%d %.1f %.2f\n" % (r["connections"], r["requests_per_s"], r["p99_ms"]))
        f.write("\n\n")
PY
gnuplot <<GP 2>"$tmp/gnuplot.err" || log "gnuplot failed: $(head -n 3 "$tmp/gnuplot.err")"
set terminal pngcairo size 1100,450 noenhanced
set output "$results/$stamp.png"
set multiplot layout 1,2 title "16 KiB raw PUT: ringup $rev vs nginx (same run)"
set logscale x
set xlabel "connections"
set key bottom left
set ylabel "uploads/s"
plot "$results/$stamp.dat" index 0 using 1:2 with linespoints title "ringup FSYNC=false", \
     "" index 1 using 1:2 with linespoints title "ringup FSYNC=true", \
     "" index 2 using 1:2 with linespoints title "nginx"
set ylabel "p99 latency (ms)"
set key top left
set logscale y
plot "$results/$stamp.dat" index 0 using 1:3 with linespoints title "ringup FSYNC=false", \
     "" index 1 using 1:3 with linespoints title "ringup FSYNC=true", \
     "" index 2 using 1:3 with linespoints title "nginx"
unset multiplot
GP
rm -f "$results/$stamp.dat"
log "results: $results/$stamp.{md,json,png}"
