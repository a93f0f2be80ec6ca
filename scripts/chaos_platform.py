"""The chaos run's one-network platform (scripts/chaos.sh): takes the gateway's pushes and keeps one
line per POST, `<X-Yichuang-Event-Id> <X-Yichuang-Cursor>`, in FILE, so the run can count status
changes received twice at two positions (a duplicate event) apart from the same entry sent
again after a crash (the push is at-least-once; a receiver drops a repeat by its event id).
Now and then (one POST in 200) it answers 503, as a busy platform does.

Usage: chaos_platform.py PORT FILE
"""

import http.server
import random
import sys

port, path = int(sys.argv[1]), sys.argv[2]
out = open(path, "a", buffering=1)


class Platform(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
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
