#!/usr/bin/env bash
# What each /debug/pprof endpoint costs the process while it is fetched, measured on the
# `server` example (release build; it allocates on two threads the whole time):
#   cpu ms/fetch  the process's CPU time (utime + stime, 10 ms ticks) over N fetches, minus
#                 its CPU rate while idle times the same wall time, divided by N
#   wall ms       wall time per fetch (curl)
#   bytes         size of the answer
#   +RSS KiB      growth of the process's peak RSS (VmHWM) over the N fetches
#   (wall time includes starting curl)
# Usage: alloc-bench/http_cost.sh [N]   (from the repository root; N defaults to 20, deltas
# and the CPU profile run N/5 times for 5 s each). The idle rate is subtracted, so the
# 5-second rows carry the noise of 5 s of the example's own work (tens of ms).
set -euo pipefail
N=${1:-20}
cargo build --quiet --release --features http --example server
BIN=target/release/examples/server
OUT=$(mktemp)
"$BIN" 127.0.0.1:0 --seconds 3600 >"$OUT" 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$OUT"' EXIT
for _ in $(seq 100); do grep -q http= "$OUT" && break; sleep 0.1; done
ADDR=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$OUT" | head -1)
TCK=$(getconf CLK_TCK)

cpu_ms() { awk -v t="$TCK" '{print ($14 + $15) * 1000 / t}' "/proc/$PID/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$PID/status"; }
now_ms() { date +%s%3N; }

# Idle rate: CPU ms per wall ms of the example's own workload.
sleep 2
c0=$(cpu_ms); t0=$(now_ms); sleep 5; c1=$(cpu_ms); t1=$(now_ms)
IDLE=$(awk -v c="$((${c1%.*} - ${c0%.*}))" -v w="$((t1 - t0))" 'BEGIN {print c / w}')
echo "server example at $ADDR: idle CPU $(awk -v r="$IDLE" 'BEGIN {printf "%.3f", r}') ms per ms"
printf '%-34s %12s %10s %10s %10s\n' endpoint "cpu ms/fetch" "wall ms" bytes "+RSS KiB"

measure() { # path count [label]
  local path=$1 n=$2 label=${3:-$1} bytes=0 c0 c1 t0 t1 h0 h1
  h0=$(hwm_kb); c0=$(cpu_ms); t0=$(now_ms)
  for _ in $(seq "$n"); do
    bytes=$(curl -s -o /dev/null -w '%{size_download}' "http://$ADDR$path")
  done
  c1=$(cpu_ms); t1=$(now_ms); h1=$(hwm_kb)
  awk -v p="$label" -v c0="$c0" -v c1="$c1" -v w="$((t1 - t0))" -v r="$IDLE" -v n="$n" \
      -v b="$bytes" -v h="$((h1 - h0))" \
      'BEGIN {cpu = (c1 - c0 - r * w) / n; if (cpu < 0) cpu = 0;
              printf "%-34s %12.1f %10.0f %10d %10d\n", p, cpu, w / n, b, h}'
}

# The first profile written loads the binary's symbols and line tables once.
measure /debug/pprof/heap 1 "first fetch (heap)"
for p in /debug/pprof/heap /debug/pprof/allocs '/debug/pprof/heap?debug=1' \
         /debug/pprof/goroutine /debug/pprof/threadcreate /debug/pprof/block \
         /debug/pprof/mutex /debug/pprof/ ; do
  measure "$p" "$N"
done
D=$(( N / 5 > 0 ? N / 5 : 1 ))
for p in '/debug/pprof/allocs?seconds=5' '/debug/pprof/heap?seconds=5' \
         '/debug/pprof/profile?seconds=5'; do
  measure "$p" "$D"
done
