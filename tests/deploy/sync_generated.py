"""Write deploy/prometheus/drop-explainer.rules.yml from the PrometheusRule.

The PrometheusRule (deploy/monitoring/prometheusrule.yaml) is the one place
the alerts are written; Prometheus without the operator, and promtool, read
the plain rules file made from its spec here. test_rules.py fails when the
two differ. Run after editing the PrometheusRule:

    .venv/bin/python tests/deploy/sync_generated.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_RULE = REPO / "deploy" / "monitoring" / "prometheusrule.yaml"
RULES_FILE = REPO / "deploy" / "prometheus" / "drop-explainer.rules.yml"
HEADER = """\
# GENERATED from deploy/monitoring/prometheusrule.yaml (its spec) by
# tests/deploy/sync_generated.py; do not edit: edit the PrometheusRule.
# For a Prometheus without the operator: add this file to rule_files.
"""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (expressions, runbooks) as | blocks, as a person writes them."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str)


def rules_spec() -> dict[str, Any]:
    """The PrometheusRule's spec: {"groups": [...]}, which is exactly a Prometheus rules file."""
    doc = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    return dict(doc["spec"])


def rules_text() -> str:
    body = yaml.dump(rules_spec(), Dumper=_BlockDumper, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main() -> int:
    text = rules_text()
    if RULES_FILE.exists() and RULES_FILE.read_text(encoding="utf-8") == text:
        print(f"{RULES_FILE.relative_to(REPO)} is up to date")
        return 0
    RULES_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {RULES_FILE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
