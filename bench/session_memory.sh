#!/usr/bin/env bash
# Resident memory per idle session of the edge and of the gateway, each its own process (release
# build), at a few session counts, and over rounds of sessions opened and all closed again (does
# memory return to its idle level?). Prints a table; measures, asserts nothing. Needs root (the
# node is a real sshd with a local account): run it through the test runner, which installs sshd:
#
#   tests/infra/run-tests.sh bench/session_memory.sh
#
# Knobs (environment): SESSIONS=100,500,1000 (the counts measured, cumulative), ROUNDS=10,
# ROUND_SESSIONS=500, PARALLEL=16 (session set-ups at once), IDLE_WAIT=16 (seconds between the last
# session opened and the measurement: idle screen models rest after 10 s), PROFILE_WAIT=SECS (print the edge's and
# the gateway's pids after the warm-up and wait, to attach a profiler: heaptrack -p PID),
# PROFILE_HOLD=SECS (hold the sessions that long after the last count, to stop a profiled stage
# while they are open: what it held then shows as "leaked").
# NODE=stand-in: the node is a stand-in SSH server, a process of its own (for session counts a real
# sshd cannot hold here: see bench/session_memory.rs); NODE=sshd (default) is a real sshd.
# FEATURES=alloc-stats: each stage also prints jemalloc's bytes allocated and resident (SIGUSR1),
# what the sessions hold against what the allocator keeps.
# To profile a stage from its first allocation, build with the system allocator and wrap it:
#   FEATURES=system-allocator SALLYPORT_PROFILE_WRAP="gateway=heaptrack -o /tmp/gateway" \
#     tests/infra/run-tests.sh bench/session_memory.sh
# (the RSS printed is then the wrapper's, not the stage's; read the profile with heaptrack_print).
set -euo pipefail
cd "$(dirname "$0")/.."
# Every session holds one descriptor in each process: the edge (the engineer's socket), the gateway
# (the node's socket; a quiet channel's recording file is closed), the load client and the node.
# The limit is per process: 10,000 sessions need a little over 10,000 (root may raise the hard
# limit; otherwise the hard limit it is).
want=65536
if ! ulimit -n "$want" 2>/dev/null; then ulimit -n "$(ulimit -Hn)"; fi
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$want" ] ||
  echo "session_memory.sh: open files limited to $(ulimit -n) per process: $(($(ulimit -n) - 100)) sessions at most" >&2
cargo bench -q --bench session_memory ${FEATURES:+--features "$FEATURES"}
