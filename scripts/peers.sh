#!/usr/bin/env bash
# Starts the test peers on loopback and prints `export` lines for the tests:
#   eval "$(scripts/peers.sh start)"; ...; scripts/peers.sh stop
# Peers: CloudWatch Logs (moto_server) and Pub/Sub (Google's emulator). Tests that find no
# address in their variable start the peer themselves.
set -euo pipefail
STATE=${TETHER_PEERS_DIR:-/tmp/tether-peers}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port name
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "peers: $2 did not listen on 127.0.0.1:$1 (log: $STATE/$2.log)" >&2
  tail -20 "$STATE/$2.log" >&2 || true
  return 1
}

start() {
  mkdir -p "$STATE"
  local moto pubsub
  moto=$(free_port); pubsub=$(free_port)
  moto_server -H 127.0.0.1 -p "$moto" >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"
  setsid gcloud beta emulators pubsub start --host-port="127.0.0.1:$pubsub" --quiet >"$STATE/pubsub.log" 2>&1 &
  echo $! >"$STATE/pubsub.pid"
  wait_port "$moto" moto >&2
  wait_port "$pubsub" pubsub >&2
  echo "export TETHER_TEST_MOTO_URL=http://127.0.0.1:$moto"
  echo "export TETHER_TEST_PUBSUB_URL=http://127.0.0.1:$pubsub"
  echo "export PUBSUB_EMULATOR_HOST=127.0.0.1:$pubsub"
}

stop() {
  for name in moto pubsub; do
    if [ -f "$STATE/$name.pid" ]; then
      pid=$(cat "$STATE/$name.pid")
      # the emulator runs a JVM under a wrapper: stop the whole process group
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
      rm -f "$STATE/$name.pid"
    fi
  done
  pkill -f 'cloud-pubsub-emulator' 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
