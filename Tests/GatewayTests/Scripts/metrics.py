"""Parses a Prometheus text exposition (stdin) with prometheus_client's own
parser, which rejects what Prometheus would, and prints every sample as JSON:
{"name{label=\"v\",...}": value}. Labels are sorted."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
        samples[f"{sample.name}{{{labels}}}"] = sample.value
json.dump(samples, sys.stdout)
