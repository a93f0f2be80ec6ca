"""The chaos run's reporting ledger (scripts/chaos.sh): every stage record the run's cases make
must be held by the simulated provincial platform, each accepted the first time once (a record
sent again after a crash is answered "数据已存在" and counted as a repeat, not as an effect), and
the reporter's reconciliation of each day the run touched must find the platform holding every
record as reported.

  records     records the platform holds
  repeats     records sent again with the same content (after a kill, a lost answer): no effect
  twice       records accepted as new more than once (never dropped in this run): duplicates
  reconciled  days whose reconciliation ended with nothing missing, held differently or refused

Usage: chaos_report.py BIN REPORTER_CONFIG PLATFORM_URL STORE DAY... ; exits 1 when a day does
not reconcile within the settle time, a record was taken twice, or the platform refused one
(a field, order or conflict refusal: 1001, 1002, 1003).
"""

import json
import subprocess
import sys
import time
import urllib.request

bindir, config, platform, store = sys.argv[1:5]
days = sys.argv[5:]
SETTLE = 300

reconciled, last = 0, ""
for day in days:
    deadline = time.monotonic() + SETTLE
    while True:
        p = subprocess.run([f"{bindir}/yichuang-adapter", "report", "reconcile", "--config", config,
                            "--date", day], capture_output=True, text=True)
        last = (p.stdout + p.stderr).strip()
        if p.returncode == 0:
            reconciled += 1
            break
        if time.monotonic() > deadline:
            print(f"chaos: the reporting of {day} did not reconcile within {SETTLE} s:")
            print("   ", last.replace("\n", "\n    "))
            break
        time.sleep(3)
    print(f"chaos: reconciliation of {day}: {last.splitlines()[0] if last else '(no output)'}")

held = json.load(urllib.request.urlopen(f"{platform}/sim/platform/records", timeout=30))
twice = sum(1 for h in held if h["accepted"] > 1 + h["dropped"])
repeats = sum(h["repeats"] for h in held)
refusals = json.load(urllib.request.urlopen(f"{platform}/sim/platform/refusals", timeout=30))
print(f"chaos reporting ({store}): records {len(held)}, repeats {repeats}, twice {twice}, "
      f"reconciled {reconciled} of {len(days)} day(s), platform refusals {refusals}")
# The reporter sends a record only after every earlier one of its line is confirmed, and only
# what the specification says: the platform never has a reason to refuse one.
refused = sum(n for code, n in refusals.items() if code in ("1001", "1002", "1003"))
sys.exit(1 if twice or refused or reconciled < len(days) or not held else 0)
