#!/usr/bin/env bash
# Builds every Lambda function (each [[bin]] of functions/) for AWS Lambda on arm64 (provided.al2023), as
# target/lambda/<function>/bootstrap.zip: the paths infra/examples/complete expects.
#
# Installs cargo-lambda and zig (the cross linker) from PyPI, pinned in scripts/requirements-lambda.txt, into
# target/venv-lambda, and the aarch64-unknown-linux-gnu Rust target. Works offline once those are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(pwd)/target/venv-lambda"
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv "$VENV" scripts/requirements-lambda.txt
export PATH="$VENV/bin:$PATH"
rustup target add aarch64-unknown-linux-gnu >/dev/null
FUNCTIONS=$(sed -n '/^\[\[bin\]\]/,/^path/ s/^name = "\(.*\)"/\1/p' functions/Cargo.toml)
ARGS=()
for f in $FUNCTIONS; do ARGS+=(--bin "$f"); done
cargo lambda build --release --arm64 --output-format zip -p cdp-functions "${ARGS[@]}"
# Each zip holds one executable, `bootstrap`, for aarch64 Linux.
CHECK=$(mktemp -d)
trap 'rm -rf "$CHECK"' EXIT
for f in $FUNCTIONS; do
  ZIP="target/lambda/$f/bootstrap.zip"
  test -s "$ZIP" || { echo "missing $ZIP" >&2; exit 1; }
  [ "$(python3 -c "import sys, zipfile; print(' '.join(zipfile.ZipFile(sys.argv[1]).namelist()))" "$ZIP")" = bootstrap ] \
    || { echo "$ZIP must hold exactly bootstrap" >&2; exit 1; }
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('bootstrap', sys.argv[2])" "$ZIP" "$CHECK/$f"
  KIND=$(file -b "$CHECK/$f/bootstrap")
  case "$KIND" in
    *ELF*aarch64*) echo "$ZIP: $(wc -c <"$ZIP") bytes; bootstrap: $KIND" ;;
    *) echo "$ZIP: bootstrap is not an aarch64 executable: $KIND" >&2; exit 1 ;;
  esac
done
