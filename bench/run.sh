#!/usr/bin/env bash
# The ingest benchmark of docs/benchmarks.md, side by side with django-helpdesk.
#
#   bench/run.sh [MAILS] [DJANGO_MAILS]       defaults: 10000 2000
#
# Builds mailrobot and the driver in release mode, installs Dovecot if it is
# missing and django-helpdesk 2.6.1 into a venv (bench/out/venv), then runs
# crates/bench over one Dovecot: mailrobot on MAILS generated mails, one mail
# with a 25 MB attachment, and django-helpdesk's get_email on the first
# DJANGO_MAILS of the same mails. Prints the results as JSON and keeps them in
# bench/out/results-<date>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
mails="${1:-10000}"
django_mails="${2:-2000}"
mkdir -p bench/out
if [ ! -x /usr/sbin/dovecot ]; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd dovecot-pop3d >/dev/null
fi
cargo build --release -q -p mailrobot -p mailrobot-bench
bench/django-helpdesk/setup.sh "$PWD/bench/out/venv"
out="bench/out/results-$(date -u +%Y%m%dT%H%M%SZ).json"
target="${CARGO_TARGET_DIR:-target}"
"$target/release/mailrobot-bench" --mails "$mails" --mailrobot "$target/release/mailrobot" \
  --django-venv "$PWD/bench/out/venv" --django-mails "$django_mails" | tee "$out"
echo "results: $out" >&2
