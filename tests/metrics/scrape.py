"""Scrape a snapgate /metrics with the Prometheus project's Python client and print what its
OpenMetrics parser read, as JSON: {"content_type": ..., "families": [{"name", "type",
"samples": [{"name", "labels", "value"}]}]}. The parser raises on anything OpenMetrics forbids
(a missing `# EOF`, a counter sample without `_total`, a histogram without `+Inf`, ...), and the
script then exits non-zero with the parser's message.

usage: scrape.py URL
"""

import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=30) as r:
        content_type = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    families = []
    for f in text_string_to_metric_families(text):
        families.append(
            {
                "name": f.name,
                "type": f.type,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for s in f.samples
                ],
            }
        )
    json.dump({"content_type": content_type, "families": families}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
