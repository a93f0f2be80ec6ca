#!/usr/bin/env python3
"""Parses an OpenMetrics exposition (stdin) with the Prometheus project's own Python parser,
strictly, and prints every sample as one JSON object per line: name, labels, value.
Exits non-zero, naming the problem, when the text is not valid OpenMetrics."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
try:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            print(json.dumps({"family": family.name, "type": family.type, "name": s.name,
                              "labels": s.labels, "value": s.value}, ensure_ascii=False))
except Exception as e:  # the parser raises ValueError with the offending line
    print(f"not valid OpenMetrics: {e}", file=sys.stderr)
    sys.exit(1)
