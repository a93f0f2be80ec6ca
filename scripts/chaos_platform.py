"""The chaos run's one-network platform (scripts/chaos.sh): takes the gateway's pushes and keeps one
line per POST, `<X-Yichuang-Event-Id> <X-Yichuang-Cursor>`, in FILE, so the run can count status
changes received twice at two positions (a duplicate event) apart from the same entry sent
again after a crash (the push is at-least-once; a receiver drops a repeat by its event id).
Now and then (one POST in 200) it answers 503, as a busy platform does. With SECRET, it checks
each push as docs/api.md says a receiver must (the signature over timestamp, event id and body;
the timestamp within 300 s) and answers 401 otherwise, so a push the gateway signs wrongly ends
set aside and the run counts it lost. Repeats are kept (the run counts them), not dropped.

Usage: chaos_platform.py PORT FILE [SECRET]
"""

import hashlib
import hmac
import http.server
import random
import sys
import time

port, path = int(sys.argv[1]), sys.argv[2]
secret = sys.argv[3].encode() if len(sys.argv) > 3 else None
WINDOW_SECS = 300
out = open(path, "a", buffering=1)


def fresh_and_signed(headers, body):
    ts = headers.get("X-Yichuang-Timestamp", "")
    event_id = headers.get("X-Yichuang-Event-Id", "")
    given = headers.get("X-Yichuang-Signature", "")
    mac = hmac.new(secret, ts.encode() + b"\n" + event_id.encode() + b"\n" + body, hashlib.sha256)
    if not hmac.compare_digest("sha256=" + mac.hexdigest(), given):
        return False
    return ts.isdigit() and abs(time.time() - int(ts)) <= WINDOW_SECS


class Platform(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if secret is not None and not fresh_and_signed(self.headers, body):
            print(f"chaos platform: refused {self.headers.get('X-Yichuang-Event-Id')}: bad signature or stale", file=sys.stderr)
            self.send_response(401)
            self.end_headers()
            return
        if random.random() < 0.005:
            self.send_response(503)
            self.end_headers()
            return
        out.write(f'{self.headers.get("X-Yichuang-Event-Id")} {self.headers.get("X-Yichuang-Cursor")}\n')
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Platform).serve_forever()
