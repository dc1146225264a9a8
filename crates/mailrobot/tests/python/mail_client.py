"""A mail user's client for the tests, on Python's own imaplib and smtplib
(not the robot's code): reads a mailbox, puts a mail into one, sends one.

  mail_client.py fetch IMAP_PORT USER PASSWORD FOLDER   -> JSON [{"uid", "raw"}]
  mail_client.py append IMAP_PORT USER PASSWORD FOLDER  <- the mail on stdin
  mail_client.py send SMTP_PORT FROM TO                 <- the mail on stdin

`raw` is the mail's bytes as Latin-1 text (one character per byte). A
folder that does not exist yet reads as empty.
"""

import imaplib
import json
import smtplib
import sys


def imap(port, user, password):
    client = imaplib.IMAP4("127.0.0.1", int(port))
    client.login(user, password)
    return client


def fetch(port, user, password, folder):
    client = imap(port, user, password)
    status, _ = client.select(folder, readonly=True)
    mails = []
    if status == "OK":
        _, data = client.uid("SEARCH", None, "ALL")
        for uid in data[0].split():
            _, parts = client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next(p[1] for p in parts if isinstance(p, tuple))
            mails.append({"uid": int(uid), "raw": raw.decode("latin-1")})
    client.logout()
    print(json.dumps(mails))


def append(port, user, password, folder):
    client = imap(port, user, password)
    status, answer = client.append(folder, None, None, sys.stdin.buffer.read())
    client.logout()
    if status != "OK":
        sys.exit(f"APPEND refused: {answer}")


def send(port, sender, recipient):
    with smtplib.SMTP("127.0.0.1", int(port)) as smtp:
        smtp.sendmail(sender, [recipient], sys.stdin.buffer.read())


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"fetch": fetch, "append": append, "send": send}[command](*args)
