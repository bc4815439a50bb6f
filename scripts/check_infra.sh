#!/usr/bin/env bash
# Scans the Terraform module (infra/, with its examples) with checkov, offline: no failed check, and every
# skip is justified inline (`#checkov:skip=ID:reason`). Installs checkov (pinned in
# scripts/requirements-infra.txt) into target/venv-checkov.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(pwd)/target/venv-checkov"
if [ ! -x "$VENV/bin/checkov" ] || ! "$VENV/bin/pip" freeze 2>/dev/null | grep -qxF -f <(grep -v '^#' scripts/requirements-infra.txt); then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-infra.txt
fi
# Every skip names its reason.
if grep -rn "checkov:skip=" infra | grep -vE "checkov:skip=[A-Z0-9_]+:.{20,}"; then
  echo "a checkov skip above has no reason" >&2
  exit 1
fi
"$VENV/bin/checkov" -d infra --framework terraform --skip-download --quiet --compact
