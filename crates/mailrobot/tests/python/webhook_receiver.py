"""A helpdesk's webhook receiver, verifying every request with the Standard
Webhooks reference library (standardwebhooks from PyPI).

argv[1]: JSON {"port": N, "secret": "whsec_...", "fail_first": K}
The first K requests are answered 500, later ones 200. Each request is
printed as one JSON line on stdout: id, timestamp, whether the library
verified it, the status answered and the parsed body.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

config = json.loads(sys.argv[1])
webhook = Webhook(config["secret"])
seen = {"requests": 0}


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            payload = webhook.verify(body, headers)
            verified, error = True, None
        except Exception as exc:  # the library's refusal, reported to the test
            payload, verified, error = None, False, repr(exc)
        seen["requests"] += 1
        status = 500 if seen["requests"] <= config["fail_first"] else 200
        print(json.dumps({
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "verified": verified,
            "error": error,
            "status": status,
            "payload": payload,
        }), flush=True)
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"thanks" if status == 200 else b"receiver busy, try later")

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", config["port"]), Receiver).serve_forever()
