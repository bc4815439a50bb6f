# Sourced by the scripts that need Python tools: `ensure_venv DIR REQUIREMENTS` makes DIR a virtual environment
# holding exactly the pinned packages of the requirements file (reinstalled when a pin changes).
ensure_venv() {
  local venv=$1 requirements=$2 pins present
  # Every pin must be installed (not only one of them).
  pins=$(grep -v -e '^#' -e '^$' "$requirements" | wc -l)
  present=$("$venv/bin/pip" freeze 2>/dev/null | grep -cxF -f <(grep -v -e '^#' -e '^$' "$requirements") || true)
  if [ ! -x "$venv/bin/pip" ] || [ "$present" != "$pins" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  fi
}
