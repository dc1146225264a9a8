#!/usr/bin/env bash
# Usage: setup.sh VENV_DIR
# Makes a Python venv at VENV_DIR (if missing) and installs django-helpdesk 2.6.1 with the
# exact versions in requirements.txt. Idempotent: a second run with the same requirements
# does nothing. Quiet: prints nothing on success; pip's output goes to stderr on failure.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$1"
req="$here/requirements.txt"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >&2
fi
stamp="$venv/.helpdesk-bench-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$venv/bin/python" -c 'import helpdesk, django' 2>/dev/null; then
    exit 0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        -r "$req" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup.sh: pip install failed" >&2
    exit 1
fi
echo "$want" > "$stamp"
