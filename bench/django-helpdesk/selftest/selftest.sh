#!/usr/bin/env bash
# Usage: selftest.sh VENV_DIR [N_MAILS]   (default 200; needs root and Debian's dovecot-imapd)
#
# Starts a throw-away Dovecot on a free loopback port (plain IMAP, passwd-file user
# user@example.test / secret, maildir), writes N_MAILS test mails into the INBOX's new/,
# runs ../setup.sh and ../run.sh against it, checks that every mail became a ticket or a
# follow-up (N // 10 of the mails are replies to earlier ones: N - N // 10 tickets, N
# FollowUps) and that the INBOX is empty afterwards, then stops Dovecot. The JSON line of run.sh goes
# to stdout; the rest to stderr.
set -euo pipefail
venv="${1:?usage: $0 VENV_DIR [N_MAILS]}"
n="${2:-200}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
user="user@example.test"
pass="secret"

dir="$(mktemp -d /tmp/helpdesk-dovecot.XXXXXX)"
chmod 0755 "$dir"   # a 0700 dir hides the users file from Dovecot's auth process
cleanup() {
    if [ -f "$dir/run/master.pid" ]; then
        kill "$(cat "$dir/run/master.pid")" 2>/dev/null || true
        for _ in $(seq 50); do [ -f "$dir/run/master.pid" ] || break; sleep 0.1; done
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$dir/run" "$dir/mail"
echo "$user:{PLAIN}$pass::::::" > "$dir/users"
chmod 0644 "$dir/users"
cat > "$dir/dovecot.conf" <<CONF
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:$dir/mail/%u
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/users
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=$dir/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
CONF

python3 "$here/make_mails.py" "$dir/mail/$user" "$n" --to "Support <$user>" >&2
chown -R dovecot:dovecot "$dir/mail"
/usr/sbin/dovecot -c "$dir/dovecot.conf"
for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null && break
    sleep 0.1
done

"$here/../setup.sh" "$venv"
out="$(HELPDESK_IMAP_PASSWORD="$pass" "$here/../run.sh" "$venv" 127.0.0.1 "$port" "$user")"
echo "$out"
left="$(ls "$dir/mail/$user/new" "$dir/mail/$user/cur" | grep -c '^[0-9]' || true)"
python3 - "$out" "$n" "$left" <<'PY'
import json, sys
r, n, left = json.loads(sys.argv[1].strip().splitlines()[-1]), int(sys.argv[2]), int(sys.argv[3])
ok = r["tickets"] == n - n // 10 and r["followups"] == n and left == 0
print(f"selftest: {n} mails -> {r['tickets']} tickets, {r['followups']} follow-ups, "
      f"{left} mail files left in the maildir: {'OK' if ok else 'FAILED'}", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
