# Shared helpers for the test-infrastructure scripts. Usage: . tests/infra/lib.sh
#
# Everything here talks to 127.0.0.1 only.

# alive PID: true while PID exists and is not a zombie. Daemonized servers are
# re-parented to PID 1, which in some containers reaps zombies only every second
# or two, so a plain `kill -0` keeps succeeding after the process has exited.
alive() {
  local s
  s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$s" ] && [ "$s" != Z ]
}

# owned_by PID DIR: true when PID is alive and its command line mentions DIR.
# Guards against signalling an unrelated process that reused a stale PID.
owned_by() {
  alive "$1" || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# stop_pid PID [SIG] [TIMEOUT_S]: signal, wait until gone, SIGKILL as a fallback.
stop_pid() {
  local pid=$1 sig=${2:-TERM} t=${3:-10} i
  alive "$pid" || return 0
  kill -s "$sig" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < t * 20; i++)); do
    alive "$pid" || return 0
    sleep 0.05
  done
  echo "pid $pid ignored SIG$sig for ${t}s, killing it" >&2
  kill -KILL "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || return 0
    sleep 0.05
  done
  return 0
}

# wait_tcp HOST PORT [TIMEOUT_S]: poll until a TCP connect succeeds (bash /dev/tcp).
wait_tcp() {
  local h=$1 p=$2 t=${3:-10} i
  case $h in
    127.* | localhost) ;;
    *) echo "wait_tcp: refusing $h: tests talk to loopback only" >&2; return 2 ;;
  esac
  for ((i = 0; i < t * 20; i++)); do
    timeout 1 bash -c "exec 3<>/dev/tcp/$h/$p" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "timeout waiting for $h:$p" >&2
  return 1
}

# port_free PORT: fail (with a clear message) if something already listens on
# 127.0.0.1:PORT. A stale or foreign server there would otherwise make a
# readiness probe succeed against the wrong process.
port_free() {
  local port=$1
  if command -v ss >/dev/null 2>&1; then
    if [ -n "$(ss -Hltn "sport = :$port")" ]; then
      echo "port $port is already in use:" >&2
      ss -ltnp "sport = :$port" >&2
      return 1
    fi
  elif timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
    echo "port $port is already in use (something accepts connections on 127.0.0.1:$port)" >&2
    return 1
  fi
  return 0
}

# die MESSAGE...: print to stderr and exit 1.
die() {
  echo "error: $*" >&2
  exit 1
}
