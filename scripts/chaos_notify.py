"""The chaos run's SMS ledger (scripts/chaos.sh): every notice a consenting applicant's case makes
due must reach the simulated SMS platform, and nothing for an applicant who did not consent.

Every even-numbered submission of the run (chaos-00000, chaos-00002, …) consented to SMS notices
(scripts/chaos_window.py); every case is delivered by mail. So each consenting case must have
exactly its `accepted`, `ready` and `mailed` notices at the platform, and no case of the others
any. The notifier's message id is stable per (case, event) (adapters/src/notify), which the
platform deduplicates on: a notice sent again after a kill is a repeat, not a second SMS.

  expected    notices due: 3 per consenting case
  held        of those the platform took
  missing     due and not at the platform when the settle time ran out: lost
  unwanted    notices for applicants who did not consent
  repeats     sends of a message id the platform already had (after a kill): no second SMS
  refused     notices the notifier holds as refused for good

Usage: chaos_notify.py WORK SMS_URL NOTIFIER_STATUS_URL STORE; exits 1 on anything missing,
unwanted or refused.
"""

import hashlib
import json
import os
import sys
import time
import urllib.request

work, sms, status_url, store = sys.argv[1:5]
SETTLE = 180
EVENTS = ("accepted", "ready", "mailed")


def message_id(case_number, event):
    return hashlib.sha256(f"{case_number}\n{event}".encode()).hexdigest()[:32]


def get(url):
    return json.load(urllib.request.urlopen(url, timeout=30))


consenting, others = set(), set()
for line in open(os.path.join(work, "accepted")):
    submission, number = line.split()
    (consenting if int(submission.rsplit("-", 1)[1]) % 2 == 0 else others).add(number)
expected = {message_id(c, e) for c in consenting for e in EVENTS}
unwanted_ids = {message_id(c, e) for c in others for e in EVENTS}

deadline = time.monotonic() + SETTLE
while True:
    held = {m["msgid"] for m in get(f"{sms}/control/messages")}
    missing = expected - held
    if not missing or time.monotonic() > deadline:
        break
    time.sleep(2)
stats = get(f"{sms}/control/stats")
notices = get(status_url)["notices"]
unwanted = held & unwanted_ids
refused = notices.get("refused", 0)
print(f"chaos notices ({store}): expected {len(expected)}, held {len(expected & held)}, "
      f"missing {len(missing)}, unwanted {len(unwanted)}, repeats {stats['duplicates']}, "
      f"refused {refused}; {stats['messages']} messages at the platform in all; "
      f"the notifier's ledger: " + ", ".join(f"{k} {v}" for k, v in sorted(notices.items())))
sys.exit(1 if missing or unwanted or refused or not expected else 0)
