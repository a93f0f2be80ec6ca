"""The chaos run's hall (scripts/chaos.sh): the comprehensive window, its desk and 公积金's clerk,
driven through the same command-line tools staff use, each step retried until it is done (the
gateway and the adapter are being killed under them).

- window: CASES submissions at RATE a second, turning over three kinds of application so that
  every department and every kind of legacy system gets work: 开餐馆 (市场监管 HTTP/JSON, 消防
  SOAP), 企业开办 (市场监管, 公安 SOAP, 税务 form-POST XML, 人社 前置库, 公积金 by hand) and
  存量房买卖 (自然资源 前置库). A submit that fails is sent again with the same submission id, and
  must answer with the same case; each receipt is appended to `accepted` as
  `<submission id> <case number>` (the ledger checks that one submission made one case).
- desk: hands in the materials a department asked for (补正) and delivers every case that is
  ready (出件, by EMS), until told to stop.
- clerk: keys every task on 公积金's worklist into the fund's system; a task it has keyed once
  that comes back to the worklist (other than for a supplement round) is a duplicate effect,
  counted in `clerk-duplicates`.

Usage: chaos_window.py WORK BIN SERVER CASES RATE. Runs until WORK/stop exists and every case is
submitted; exits 0.
"""

import json
import os
import subprocess
import sys
import threading
import time
import tomllib

work, bindir, server, cases, rate = sys.argv[1:6]
cases, rate = int(cases), float(rate)
yichuang = os.path.join(bindir, "yichuang")
adapter = os.path.join(bindir, "yichuang-adapter")


def run(*args):
    """The command's standard output, or None when it failed."""
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None
    return p.stdout if p.returncode == 0 else None


def stopped():
    return os.path.exists(os.path.join(work, "stop"))


def id_check(first17):
    """The check character of a resident ID number (GB 11643, ISO 7064 MOD 11-2)."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, weights)) % 11]


def templates():
    kai = json.load(open("examples/cases/kai-canguan.json"))
    qiye = json.load(open("examples/cases/qiye-kaiban.json"))
    # The deficient 存量房买卖 example, completed: the seller's ID number with its right check
    # character, and the contract (MMHT) and the tax receipt (WSPZ) it lacked.
    bdc = json.load(open("examples/cases/bdc-deficient.json"))
    seller = bdc["otherParties"][0]
    seller["idNumber"] = seller["idNumber"][:17] + id_check(seller["idNumber"][:17])
    for n, code in enumerate(["MMHT", "WSPZ"]):
        m = json.loads(json.dumps(bdc["materials"][0]))
        m["materialCode"] = code
        m["file"]["uri"] = f"s3://yichuang-materials/chaos/{code.lower()}.pdf"
        m["file"]["sha256"] = f"{n + 1:064x}"
        bdc["materials"].append(m)
    return [kai, qiye, bdc]


def window():
    kinds = templates()
    os.makedirs(os.path.join(work, "cases"), exist_ok=True)
    start = time.monotonic()
    with open(os.path.join(work, "accepted"), "a") as accepted:
        for i in range(cases):
            # A steady pace: case i is due at i / rate seconds.
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            s = json.loads(json.dumps(kinds[i % len(kinds)]))
            s["submissionId"] = f"chaos-{i:05d}"
            s.pop("submittedAt", None)  # accepted now, by the gateway's clock
            # Every other applicant agrees to SMS notices (scripts/chaos_notify.py).
            s["applicant"]["contact"]["smsConsent"] = i % 2 == 0
            path = os.path.join(work, "cases", f"case-{i}.json")
            with open(path, "w") as f:
                json.dump(s, f, ensure_ascii=False)
            # Resubmitted until it has a receipt; every tenth once more after that (the clerk
            # pressed the button twice), which must answer with the same case.
            for _ in range(2 if i % 10 == 0 else 1):
                for _ in range(180):
                    out = run(yichuang, "case", "submit", "--server", server, "--file", path)
                    if out is not None:
                        number = json.loads(out)["receipt"]["caseNumber"]
                        accepted.write(f'{s["submissionId"]} {number}\n')
                        accepted.flush()
                        break
                    time.sleep(1)
                else:
                    print(f"chaos window: submission chaos-{i:05d} never accepted", file=sys.stderr)


def listing(status):
    numbers, token = [], ""
    while True:
        args = [yichuang, "case", "list", "--server", server, "--status", status, "--page-size", "500"]
        out = run(*args + (["--page-token", token] if token else []))
        if out is None:
            return numbers
        page = json.loads(out)
        numbers += [c["caseNumber"] for c in page.get("cases", [])]
        token = page.get("nextPageToken", "")
        if not token:
            return numbers


def desk():
    names = {
        m["name"]: m["code"]
        for m in tomllib.load(open("config/catalog/materials.toml", "rb"))["material"]
    }
    while not (stopped() and done.is_set()):
        for number in listing("CASE_STATUS_AWAITING_SUPPLEMENT"):
            out = run(yichuang, "case", "get", "--server", server, number)
            if out is None:
                continue
            tasks = json.loads(out)["case"].get("tasks", [])
            asked = {
                names[n]
                for t in tasks
                if t.get("status") == "TASK_STATUS_SUPPLEMENT_REQUIRED"
                for n in t.get("materialsRequested", [])
                if n in names
            }
            args = [a for c in sorted(asked) for a in ("--material", c)]
            if args:
                run(yichuang, "case", "supplement", "--server", server, number, *args, "--staff-no", "0342")
        for number in listing("CASE_STATUS_READY_FOR_DELIVERY"):
            run(yichuang, "case", "deliver", "--server", server, number, "--carrier", "EMS",
                "--tracking-number", "EMS" + number[-10:])
        time.sleep(2)


def clerk():
    keyed = set()
    duplicates = 0
    n = 0  # the fund's case and document numbers
    config = os.path.join(work, "adapter.toml")
    while not (stopped() and done.is_set()):
        out = run(adapter, "manual", "list", "--config", config, "--department", "gjj")
        for line in (out or "").splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            key = (entry["task_id"], entry.get("round", 0))
            if key in keyed:
                duplicates += 1  # keyed already, and on the worklist again
                with open(os.path.join(work, "clerk-duplicates"), "w") as f:
                    f.write(f"{duplicates}\n")
            n += 1
            if run(adapter, "manual", "complete", "--config", config, "--department", "gjj",
                   "--task", entry["task_id"], "--case-number", f"GJJ2026{n:06d}",
                   "--outcome", "approved", "--document-number", f"GJJDW{n:08d}",
                   "--document-name", "住房公积金单位登记回执", "--clerk", "0815",
                   *(["--round", str(key[1])] if key[1] else [])) is not None:
                keyed.add(key)
        time.sleep(2)


done = threading.Event()
helpers = [threading.Thread(target=desk), threading.Thread(target=clerk)]
for t in helpers:
    t.start()
window()
done.set()
with open(os.path.join(work, "submitted"), "w") as f:
    f.write("done\n")
for t in helpers:
    t.join()
