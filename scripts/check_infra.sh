#!/usr/bin/env bash
# Scans the Terraform module (infra/, with its examples) with checkov, offline: no failed check, and every
# skip is justified inline (`#checkov:skip=ID:reason`). Installs checkov (pinned in
# scripts/requirements-infra.txt) into target/venv-checkov.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(pwd)/target/venv-checkov"
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv "$VENV" scripts/requirements-infra.txt
# Every skip names its reason.
if grep -rn "checkov:skip=" infra | grep -vE "checkov:skip=[A-Z0-9_]+:.{20,}"; then
  echo "a checkov skip above has no reason" >&2
  exit 1
fi
"$VENV/bin/checkov" -d infra --framework terraform --skip-download --quiet --compact
