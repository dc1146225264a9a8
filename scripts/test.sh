#!/usr/bin/env bash
# The test command (README.md, .ci/run): installs what the tests need on a
# fresh Debian machine, then runs formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd dovecot-pop3d)
# SMTP: Dovecot's submission service (AUTH, XOAUTH2) relaying to Postfix's smtp-sink.
[ -x /usr/lib/dovecot/submission ] || missing+=(dovecot-submissiond)
[ -x /usr/sbin/smtp-sink ] || missing+=(postfix)
# Mail the robot sends that must come back: submission relays (through a small
# aiosmtpd relay, crates/testkit/src/lmtp_relay.rs) into Dovecot's LMTP.
[ -x /usr/lib/dovecot/lmtp ] || missing+=(dovecot-lmtpd)
# A requester's real Sieve vacation (Pigeonhole) in the auto-responder tests.
[ -e /usr/lib/dovecot/modules/lib90_sieve_plugin.so ] || missing+=(dovecot-sieve)
# Microsoft's own clients (msal, msgraph-sdk) and exchangelib run in venvs the tests make.
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv)
# The admin UI's tests drive a real, headless Chromium over WebDriver.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The tests start their own Dovecot and smtp-sink instances on free loopback
# ports; system instances the packages may have started do not get in the way.

# PostgreSQL: the store's tests and the end-to-end suite run on both backends.
# A throwaway cluster is started unless MAILROBOT_TEST_DATABASE_URL names a
# server (its role must be allowed to create databases; with it, give
# MAILROBOT_TEST_PG_CA, the CA of the server's TLS certificate, which must be
# issued for the URL's host).
if [ -z "${MAILROBOT_TEST_DATABASE_URL:-}" ]; then
  echo "== starting a throwaway PostgreSQL"
  eval "$(scripts/throwaway-postgres.sh)"
  trap 'scripts/throwaway-postgres.sh stop "$MAILROBOT_TEST_PG_DIR"' EXIT
fi
export MAILROBOT_TEST_DATABASE_URL MAILROBOT_TEST_PG_CA

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== tests (the end-to-end suite on SQLite; the store's tests on both backends;"
echo "   several nodes and the chaos test on PostgreSQL)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast --workspace
  echo "== the end-to-end suite again, on PostgreSQL"
  # nodes.rs and migrate_store.rs choose their backends themselves: run once.
  # (--workspace with a filter: the same build as above, nothing recompiled.)
  MAILROBOT_TEST_BACKEND=postgres cargo nextest run --no-fail-fast --workspace \
    -E 'package(mailrobot) & not (binary(nodes) | binary(migrate_store))'
else
  cargo test --no-fail-fast --workspace
  echo "== the end-to-end suite again, on PostgreSQL"
  MAILROBOT_TEST_BACKEND=postgres cargo test --no-fail-fast -p mailrobot -- \
    --skip chaos_ --skip nodes_share --skip another_master_key --skip migrate
fi
