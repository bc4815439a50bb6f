#!/usr/bin/env bash
# Runs every test binary of `cargo test --workspace` again with the clock moved forward by each of the given
# offsets (libfaketime's syntax: +30d, +400d), so that a test depending on today's date fails today, not on the
# day its fixtures expire. The binaries are the ones the test command already built: cargo itself does not run
# under libfaketime. The processes the tests start (`cdp up`, the Lambda binaries, the S3 server) inherit the
# moved clock. One test is left out: the edge worker under `wrangler dev`, because workerd does not start under
# libfaketime and, with the real clock beside the moved one, its signed S3 requests are refused as skewed; the
# worker's decisions come from the same core the other tests run with the moved clock.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
[ $# -ge 1 ] || { echo "usage: $0 OFFSET... (e.g. +30d +400d)" >&2; exit 2; }
LIB=$(find /usr/lib -name 'libfaketime.so.1' -path '*faketime*' | grep -v MT | head -1)
[ -n "$LIB" ] || { echo "libfaketime is missing (apt-get install faketime)" >&2; exit 1; }

# Each test executable with the folder cargo runs it in (its package's).
cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(os.path.dirname(m["manifest_path"]) + "\t" + m["executable"])
' > target/test-binaries.tsv

for OFFSET in "$@"; do
  echo "--- tests with the clock moved $OFFSET: $(FAKETIME="$OFFSET" LD_PRELOAD="$LIB" date -u +%FT%TZ)"
  FAILED=0
  while IFS=$'\t' read -r DIR EXE; do
    if ! (cd "$DIR" && FAKETIME="$OFFSET" LD_PRELOAD="$LIB" "$EXE" -q --skip edge_worker_under_wrangler >"$ROOT/target/moved-clock.log" 2>&1); then
      echo "FAILED with the clock moved $OFFSET: $EXE (in $DIR)"
      tail -60 "$ROOT/target/moved-clock.log"
      FAILED=1
    fi
  done < target/test-binaries.tsv
  [ "$FAILED" = 0 ] || exit 1
  echo "every test passes with the clock moved $OFFSET"
done
