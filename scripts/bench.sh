#!/usr/bin/env bash
# Benchmarks artifactstore side by side with the CNCF distribution registry (Debian's docker-registry 2.8) and with
# this machine's own limits, and writes the results into docs/BENCHMARKS.md.
#
#   scripts/bench.sh            full run (about ten minutes on 2 cores), release build, updates docs/BENCHMARKS.md
#   scripts/bench.sh --quick    seconds, debug build, checks every workload's results; writes nothing
#   scripts/bench.sh --only a,g (any workload letters; with the full sizes)
#
# Needs PostgreSQL for workload c (ARTIFACTSTORE_TEST_POSTGRES, default postgres://root@127.0.0.1:5432/test; skipped
# loudly without it unless CI=true) and
# installs docker-registry with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
args=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        *) args+=("$arg") ;;
    esac
done

if [ ! -x /usr/bin/docker-registry ]; then
    echo "installing docker-registry (the peer) with apt-get" >&2
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq docker-registry >/dev/null
fi
# The Debian package may start a registry of its own on :5000; the harness starts its own on free ports.

if [ -n "$quick" ]; then
    cargo build --locked -q -p artifactstore -p artifactstore-bench
    exec target/debug/artifactstore-bench --quick --command "scripts/bench.sh --quick" "${args[@]}"
fi
cargo build --release --locked -q -p artifactstore -p artifactstore-bench
# Many SSE subscribers need many descriptors, in the harness and in the server it starts.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
target/release/artifactstore-bench --out docs/BENCHMARKS.md --command "scripts/bench.sh${args[*]:+ ${args[*]}}" "${args[@]}"
