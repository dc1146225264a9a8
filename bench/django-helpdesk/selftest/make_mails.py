#!/usr/bin/env python3
"""Write N realistic test mails (~10 KB each) into a maildir's new/ folder.

  make_mails.py MAILDIR N [--seed S] [--to ADDR]

Every third mail is plain text, every third text/plain + text/html alternative, every
third multipart/mixed with that alternative and a base64 PDF attachment; some carry a Cc,
non-ASCII text (quoted-printable) or an RFC 2047 subject. Every tenth mail (i % 10 == 9,
so N // 10 of them) is a reply ("Re: ", In-Reply-To/References) to an earlier mail of the
set; the others start new conversations (no In-Reply-To, no [queue-N] tag). So a helpdesk
should make N - N // 10 tickets and N ticket entries (django-helpdesk: FollowUps).
"""
import argparse
import os
import random
import socket
import textwrap
import time
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timedelta, timezone

FIRST = ["Anna", "Bernd", "Chloé", "David", "Eva", "Farid", "Greta", "Hannes", "Ines", "Jonas",
         "Katarzyna", "Lukas", "Mia", "Noah", "Olga", "Paul", "Renée", "Sven", "Tanja", "Ümit"]
LAST = ["Müller", "Schmidt", "Dubois", "Rossi", "Novak", "Jensen", "García", "Kowalski",
        "Smith", "Yilmaz", "Bauer", "Lindqvist"]
DOMAINS = ["customer.example", "acme.example", "mail.example.org", "firma.example.de"]
TOPICS = ["Invoice {n} shows the wrong amount", "Cannot log in since this morning",
          "Order {n}: delivery is late", "Please change my billing address",
          "VPN drops every few minutes", "Refund for order {n}", "Printer on floor 3 offline",
          "Frage zu Rechnung {n}", "Password reset link does not arrive",
          "Export to CSV is missing columns", "Contract renewal {n}", "Bug: app crashes on start"]
WORDS = ("the a we our your system order invoice account please since yesterday again "
         "customer support error message screen after update could you check status when "
         "this that with for from delivery payment address login password report attached "
         "number version thanks regards problem issue team week monday friday").split()
UMLAUT = "Grüße aus Köln – die Lieferung ist leider noch nicht angekommen. Schöne Grüße, Ähm… "


def paragraph(rng, words):
    s = " ".join(rng.choice(WORDS) for _ in range(words))
    return s[0].upper() + s[1:] + "."


def body_text(rng, size, name, non_ascii):
    parts = [f"Hello support team,\n"]
    while sum(len(p) for p in parts) < size:
        p = paragraph(rng, rng.randint(30, 70))
        if non_ascii and rng.random() < 0.3:
            p = UMLAUT + p
        parts.append(p + "\n")
    parts.append(f"\nBest regards,\n{name}\n")
    return "\n".join(parts)


def html_of(text):
    paras = "".join(f"<p>{p}</p>\n" for p in text.split("\n\n") if p.strip())
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>p{font-family:Arial;}"
            "</style></head>\n<body>\n" + paras + "</body></html>\n")


def fake_pdf(rng, size):
    head = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    return head + bytes(rng.getrandbits(8) for _ in range(size - len(head) - 6)) + b"\n%%EOF"


def make(i, rng, to_addr, when, earlier):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = f"{first} {last}"
    local = (first[0] + last).lower().encode("ascii", "ignore").decode() or "user"
    sender = Address(name, local + str(i), rng.choice(DOMAINS))
    non_ascii = rng.random() < 0.25
    subject = rng.choice(TOPICS).format(n=100000 + i)
    if non_ascii:
        subject = "Dringend: " + subject + " – Grüße"
    msg = EmailMessage()
    msg["Received"] = (f"from mx{i % 7}.{sender.domain} (mx{i % 7}.{sender.domain} "
                       f"[192.0.2.{i % 250 + 1}]) by mx.example.test with ESMTPS id {i:08X}; "
                       f"{format_datetime(when)}")
    msg["Date"] = format_datetime(when)
    msg["From"] = sender
    msg["To"] = to_addr
    if i % 10 == 7:
        msg["Cc"] = Address("Team Lead", "lead", sender.domain)
    if i % 10 == 9:
        orig_id, orig_subject = earlier[rng.randrange(len(earlier))]
        subject = "Re: " + orig_subject
        msg["In-Reply-To"] = orig_id
        msg["References"] = orig_id
    msg["Subject"] = subject
    msg_id = make_msgid(idstring=f"bench{i}", domain=sender.domain)
    msg["Message-ID"] = msg_id
    if i % 10 != 9:
        earlier.append((msg_id, subject))
    msg["X-Mailer"] = rng.choice(["Thunderbird 115.6", "Microsoft Outlook 16.0", "Apple Mail (2.3774)"])
    kind = i % 3
    if kind == 0:
        # Wrapped at 72 like most mail clients: goes out 7bit/8bit instead of quoted-printable.
        text = "\n".join(textwrap.fill(p, 72) if p else p for p in
                         body_text(rng, 9000, name, non_ascii).split("\n"))
        msg.set_content(text)
    else:
        text = body_text(rng, 3600, name, non_ascii)
        msg.set_content(text)
        msg.add_alternative(html_of(text), subtype="html")
        if kind == 2:
            msg.add_attachment(fake_pdf(rng, 1800), maintype="application", subtype="pdf",
                               filename=f"invoice-{100000 + i}.pdf")
    return msg.as_bytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("maildir")
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--to", default="Support <support@example.test>")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    new = os.path.join(a.maildir, "new")
    for d in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(a.maildir, d), exist_ok=True)
    start = datetime(2025, 3, 3, 8, 0, tzinfo=timezone.utc)
    host = socket.gethostname()
    now = int(time.time())
    total = 0
    earlier = []
    for i in range(a.n):
        data = make(i, rng, a.to, start + timedelta(minutes=7 * i), earlier)
        total += len(data)
        # Maildir names sort by time then sequence, so Dovecot keeps the generated order.
        with open(os.path.join(new, f"{now}.M{i:06d}P{os.getpid()}.{host}"), "wb") as f:
            f.write(data)
    print(f"wrote {a.n} mails ({a.n // 10} replies), {total / max(a.n, 1) / 1024:.1f} KB on average, to {new}")


if __name__ == "__main__":
    main()
