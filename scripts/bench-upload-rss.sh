#!/usr/bin/env bash
# Measures the server's peak memory while `artifactstore upload` pushes one large file in chunks.
#
#   scripts/bench-upload-rss.sh [SIZE_MIB] [CHUNK_MIB]      (defaults: 1024 and 8)
#
# Builds the release binary, starts `serve` on a fresh SQLite database and filesystem store in a temporary
# directory, uploads a file of random bytes, checks both digests against sha256sum and b3sum-free BLAKE3 (the
# server's answer is compared with the client's own hashing), and prints the server's peak RSS (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
chunk_mib=${2:-8}
cargo build --release --locked -p artifactstore >/dev/null
bin=$PWD/target/release/artifactstore
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$work" && exec "$bin" serve --listen "127.0.0.1:$port" --log warn) &
server=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/blob.bin"
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
start=$(date +%s.%N)
out=$("$bin" upload --server "http://127.0.0.1:$port" --chunk-size "$((chunk_mib * 1024 * 1024))" "$work/blob.bin" 2>/dev/null)
end=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
sha=$(sha256sum "$work/blob.bin" | cut -d' ' -f1)
echo "$out"
echo "$out" | grep -q "sha256:$sha" || { echo "SHA-256 mismatch: expected $sha" >&2; exit 1; }
blake3=$(echo "$out" | awk '{print $2}')
curl -fs "http://127.0.0.1:$port/v1/blobs/$blake3" | sha256sum | grep -q "$sha" || { echo "read-back mismatch" >&2; exit 1; }
python3 - "$size_mib" "$chunk_mib" "$start" "$end" "$rss_before" "$hwm" <<'PY'
import sys
size, chunk, start, end, before, hwm = sys.argv[1:]
secs = float(end) - float(start)
print(f"uploaded {size} MiB in {chunk} MiB chunks in {secs:.1f} s ({float(size)/secs:.0f} MiB/s, client hashing included)")
print(f"server RSS before: {int(before)/1024:.1f} MiB, peak (VmHWM): {int(hwm)/1024:.1f} MiB")
PY
