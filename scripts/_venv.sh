# Sourced by scripts/*: make .venv (Python 3.11+) and install the project into it once per change.
VENV="${FETCHER_VENV:-$PWD/.venv}"

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "fetcher needs Python 3.11 or newer on PATH" >&2
  return 1
}

ensure_venv() {
  local extra="${1:-}" spec="." stamp
  [ -n "$extra" ] && spec=".[$extra]"
  if [ ! -x "$VENV/bin/python" ]; then
    "$(find_python)" -m venv "$VENV"
  fi
  # Reinstall only when pyproject.toml changed since the last install of this flavour.
  stamp="$VENV/.installed-${extra:-base}-$(sha1sum pyproject.toml | cut -c1-12)"
  if [ ! -e "$stamp" ]; then
    echo "installing fetcher${extra:+ with [$extra]} into $VENV ..." >&2
    local log="$VENV/install.log"
    # A venv made before the package was renamed still has "fetcher" installed: one package
    # of that import name only.
    "$VENV/bin/python" -m pip uninstall --disable-pip-version-check -y -q fetcher >/dev/null 2>&1 || true
    if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
      "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$spec"; } >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      echo "installing fetcher failed; the full log is $log" >&2
      return 1
    fi
    touch "$stamp"
  fi
}
