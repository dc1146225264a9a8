#!/usr/bin/env bash
# Usage: HELPDESK_IMAP_PASSWORD=... run.sh VENV_DIR IMAP_HOST IMAP_PORT USER
#
# Resets the django-helpdesk database (fresh migrate), makes one Queue that reads
# IMAP_HOST:IMAP_PORT (plain IMAP, no SSL) as USER, folder INBOX (or $HELPDESK_IMAP_FOLDER),
# times ONE `python manage.py get_email` over that mailbox and prints one JSON line on stdout:
#   {"tool":"django-helpdesk","version":"2.6.1","tickets":N,"followups":M,"seconds":S,"mails_per_second":X}
# Everything else goes to stderr. Database: $HELPDESK_DB (default /tmp/helpdesk-bench.sqlite3);
# attachments: $HELPDESK_MEDIA_ROOT (default /tmp/helpdesk-bench-media); both are wiped first.
set -euo pipefail
if [ $# -ne 4 ]; then
    echo "usage: HELPDESK_IMAP_PASSWORD=... $0 VENV_DIR IMAP_HOST IMAP_PORT USER" >&2
    exit 2
fi
if [ -z "${HELPDESK_IMAP_PASSWORD+x}" ]; then
    echo "run.sh: set HELPDESK_IMAP_PASSWORD to the mailbox password" >&2
    exit 2
fi
venv="$1" host="$2" port="$3" user="$4"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$venv/bin/python"
if ! "$py" -c 'import helpdesk' 2>/dev/null; then
    echo "run.sh: no django-helpdesk in $venv; run $here/setup.sh $venv first" >&2
    exit 1
fi
export HELPDESK_DB="${HELPDESK_DB:-/tmp/helpdesk-bench.sqlite3}"
export HELPDESK_MEDIA_ROOT="${HELPDESK_MEDIA_ROOT:-/tmp/helpdesk-bench-media}"
export HELPDESK_IMAP_PASSWORD DJANGO_SETTINGS_MODULE=benchproject.settings PYTHONDONTWRITEBYTECODE=1
cd "$here/project"
tool() { "$py" bench_tool.py "$@"; }

rm -f "$HELPDESK_DB" "$HELPDESK_DB-journal" "$HELPDESK_DB-wal" "$HELPDESK_DB-shm"
rm -rf "$HELPDESK_MEDIA_ROOT"
mkdir -p "$(dirname "$HELPDESK_DB")" "$HELPDESK_MEDIA_ROOT"
"$py" manage.py migrate --noinput -v0 >&2
tool create-queue "$host" "$port" "$user" >&2

before="$(tool mailbox-count "$host" "$port" "$user")"
echo "mailbox $user: $before mails before get_email" >&2
seconds="$(tool time-get-email)"
after="$(tool mailbox-count "$host" "$port" "$user")"
echo "get_email took ${seconds}s; mailbox: $after mails left (not \\Deleted) of $before" >&2
tool report "$seconds"
