"""The chaos run's ledger (scripts/chaos.sh): every accepted case reconciled against the gateway, the
departments' simulators, the clerk and the platform.

  accepted    receipts held by the window (distinct case numbers); each submission must have
              made one case however often it was sent, and every submission must be accepted
  decided     cases whose every task has the department's decision
  ready       cases that became ready for delivery (ready or delivered now)
  delivered   cases handed over (出件)
  stranded    accepted cases not delivered when the run ends
  duplicates  effects at the departments that happened twice: serials submitted twice at a
              system that does not deduplicate (the simulators' counters) and tasks the clerk
              was asked to key again
  dup-events  status changes recorded twice: a decision, ready or delivery entry twice in a
              case's history, or one history entry pushed to the platform at two positions
  unpushed    history entries the platform never received
  lost        stranded cases with a task that has no message in any queue of the run

Usage: chaos_ledger.py WORK BIN SERVER STORE CASES DEPT=STATS_URL... ; prints the ledger (and the
stranded cases); exits 1 when a submission is missing or made two cases, or anything is
stranded, duplicated, unpushed or lost.
"""

import collections
import json
import os
import subprocess
import sys
import time
import urllib.request

work, bindir, server, store, cases = sys.argv[1:6]
cases = int(cases)
stats_urls = sys.argv[6:]
yichuang = os.path.join(bindir, "yichuang")


def case(number):
    """The case and its history. Reading 2,000 cases one after the other goes over the hall's
    call rate ([limits]): a refusal with RESOURCE_EXHAUSTED is waited out and asked again, as a
    well-behaved client does; any other failure ends the ledger."""
    for attempt in range(60):
        p = subprocess.run([yichuang, "case", "get", "--server", server, number],
                           capture_output=True, text=True, timeout=60)
        if p.returncode == 0:
            answer = json.loads(p.stdout)
            return answer["case"], answer.get("events", [])
        if "ResourceExhausted" not in p.stderr:
            raise SystemExit(f"chaos ledger: case get {number} failed: {p.stderr.strip()}")
        time.sleep(0.5)
    raise SystemExit(f"chaos ledger: case get {number} refused for 30 s: over the call rate")


receipts = collections.defaultdict(set)
for line in open(os.path.join(work, "accepted")):
    submission, number = line.split()
    receipts[submission].add(number)
split = {s: n for s, n in receipts.items() if len(n) > 1}
for s, n in split.items():
    print(f"chaos: submission {s} made {len(n)} cases: {sorted(n)}")
numbers = sorted(set().union(*receipts.values())) if receipts else []
FINAL = {"TASK_STATUS_APPROVED", "TASK_STATUS_REJECTED"}
ONCE = {"accepted", "task-approved", "task-rejected", "case-ready-for-delivery", "case-delivered"}
decided = ready = delivered = dup_events = 0
stranded = []
expected = set()
for number in numbers:
    c, events = case(number)
    if not any(e["kind"] == "accepted" for e in events):
        sys.exit(f"chaos ledger: case {number} has no history: cannot reconcile it")
    tasks = c.get("tasks", [])
    if tasks and all(t.get("status") in FINAL for t in tasks):
        decided += 1
    kinds = collections.Counter()
    for e in events:
        expected.add(f'{number}:{e["seq"]}')
        if e["kind"] in ONCE:
            kinds[(e["kind"], e.get("taskId", ""))] += 1
    dup_events += sum(n - 1 for n in kinds.values() if n > 1)
    if kinds[("case-ready-for-delivery", "")]:
        ready += 1
    if c["status"] == "CASE_STATUS_DELIVERED":
        delivered += 1
    else:
        stranded.append((number, c["status"], [(t["taskId"][-2:], t["status"]) for t in tasks]))

# The platform: each history entry once, at one position. The push trails the history: it is
# waited for as long as it makes progress (a minute without any is the end).
def pushed():
    positions = collections.defaultdict(set)
    path = os.path.join(work, "platform")
    for line in open(path) if os.path.exists(path) else []:
        event, cursor = line.split()
        positions[event].add(cursor)
    return positions


deadline = time.monotonic() + 60
last = None
while True:
    positions = pushed()
    unpushed = len(expected - positions.keys())
    if unpushed != last:
        last, deadline = unpushed, time.monotonic() + 60
    if not unpushed or time.monotonic() > deadline:
        break
    time.sleep(2)
dup_events += sum(len(p) - 1 for p in positions.values())

duplicates = 0
for arg in stats_urls:
    department, url = arg.split("=", 1)
    stats = json.load(urllib.request.urlopen(url))
    n = stats.get("repeated_serials", stats["duplicates"])
    if n:
        print(f"chaos: {n} serial(s) submitted twice at {department}")
    if stats["duplicates"] > n:
        # Answered as they stand (the round is the system's key): no effect, but worth knowing.
        print(f"chaos: {stats['duplicates'] - n} supplement round(s) handed in again at {department}")
    duplicates += n
clerk = os.path.join(work, "clerk-duplicates")
if os.path.exists(clerk):
    duplicates += int(open(clerk).read())

lost = 0
if stranded:
    queued = int(open(os.path.join(work, "queued")).read() or 0) if os.path.exists(os.path.join(work, "queued")) else 0
    lost = len(stranded) if queued == 0 else 0
    print("chaos: stranded cases (and their tasks):")
    for s in stranded:
        print("   ", *s)

if len(receipts) < cases:
    print(f"chaos: only {len(receipts)} of {cases} submissions were accepted")
print(f"chaos ledger ({store}): accepted {len(numbers)}, decided {decided}, ready {ready}, "
      f"delivered {delivered}, stranded {len(stranded)}, duplicates at departments {duplicates}, "
      f"duplicate events {dup_events}, unpushed events {unpushed}, lost {lost}")
failed = split or len(receipts) < cases or stranded or duplicates or dup_events or unpushed or lost
sys.exit(1 if failed else 0)
