#!/usr/bin/env python
"""Helper steps for run.sh; everything it says goes to stderr except the final JSON line.

  bench_tool.py create-queue HOST PORT USER   (password from $HELPDESK_IMAP_PASSWORD)
  bench_tool.py mailbox-count HOST PORT USER  (messages in the folder not flagged \\Deleted)
  bench_tool.py time-get-email                (runs `manage.py get_email --quiet` once, prints seconds)
  bench_tool.py report SECONDS                (counts tickets/follow-ups, prints the JSON line)
"""
import imaplib
import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDER = os.environ.get("HELPDESK_IMAP_FOLDER", "INBOX")


def password():
    pw = os.environ.get("HELPDESK_IMAP_PASSWORD")
    if pw is None:
        sys.exit("bench_tool: HELPDESK_IMAP_PASSWORD is not set")
    return pw


def setup_django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")
    sys.path.insert(0, str(HERE))
    import django

    django.setup()


def create_queue(host, port, user):
    setup_django()
    from helpdesk.models import Queue

    q = Queue.objects.create(
        title="Bench",
        slug="bench",
        email_address=os.environ.get("HELPDESK_QUEUE_EMAIL", user if "@" in user else None),
        allow_email_submission=True,
        email_box_type="imap",
        email_box_host=host,
        email_box_port=int(port),
        email_box_ssl=False,
        email_box_user=user,
        email_box_pass=password(),
        email_box_imap_folder=FOLDER,
        # get_email skips a queue whose last check + interval is still in the future;
        # 0 minutes and no last check make it read the mailbox now.
        email_box_interval=0,
        email_box_last_check=None,
        # "none": the queue's logger gets no handlers; no per-message log lines.
        logging_type="none",
        logging_dir=None,
    )
    print(f"queue {q.slug}: imap {host}:{port} user {user} folder {FOLDER}", file=sys.stderr)


def mailbox_count(host, port, user):
    m = imaplib.IMAP4(host, int(port))
    try:
        m.login(user, password())
        typ, data = m.select(FOLDER, readonly=True)
        if typ != "OK":
            sys.exit(f"bench_tool: cannot select {FOLDER}: {data}")
        typ, data = m.search(None, "NOT", "DELETED")
        n = len(data[0].split()) if data and data[0] else 0
        m.close()
    finally:
        m.logout()
    print(n)


def time_get_email():
    cmd = [sys.executable, str(HERE / "manage.py"), "get_email", "--quiet"]
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, stdout=sys.stderr, cwd=HERE)
    seconds = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"bench_tool: get_email exited with {rc}")
    print(f"{seconds:.6f}")


def report(seconds):
    setup_django()
    from helpdesk.models import FollowUp, FollowUpAttachment, Ticket

    seconds = float(seconds)
    tickets = Ticket.objects.count()
    followups = FollowUp.objects.count()
    attachments = FollowUpAttachment.objects.count()
    print(f"tickets {tickets}, follow-ups {followups}, attachments {attachments}", file=sys.stderr)
    # Each mail that get_email turns into a ticket or into an update of one makes exactly
    # one FollowUp (a new ticket gets its first FollowUp too), so follow-ups = mails processed.
    rate = followups / seconds if seconds > 0 else 0.0
    print(json.dumps({
        "tool": "django-helpdesk",
        "version": version("django-helpdesk"),
        "tickets": tickets,
        "followups": followups,
        "seconds": round(seconds, 3),
        "mails_per_second": round(rate, 2),
    }))


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "create-queue" and len(args) == 3:
        create_queue(*args)
    elif cmd == "mailbox-count" and len(args) == 3:
        mailbox_count(*args)
    elif cmd == "time-get-email" and not args:
        time_get_email()
    elif cmd == "report" and len(args) == 1:
        report(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
