"""The alerting rules: one source, promtool-clean, a unit test per alert, runbooks, real metric names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import deploy_support
import sync_generated
import yaml
from deploy_support import Tools, one

TESTS = Path(__file__).parent / "rules_test.yml"
REQUIRED_ANNOTATIONS = {"summary", "description", "runbook"}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(sync_generated.RULES_FILE.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_file_is_the_prometheusrule_spec(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """deploy/prometheus/drop-explainer.rules.yml is generated from the PrometheusRule and identical to it."""
    plain = yaml.safe_load(sync_generated.RULES_FILE.read_text(encoding="utf-8"))
    operator = one(rendered["monitoring"], "PrometheusRule", "drop-explainer")["spec"]
    assert plain == operator
    assert sync_generated.RULES_FILE.read_text(encoding="utf-8") == sync_generated.rules_text(), \
        "stale: run .venv/bin/python tests/deploy/sync_generated.py"


def test_promtool_checks_the_rules(tools: Tools) -> None:
    """promtool check rules accepts the file (syntax, templates, durations)."""
    done = subprocess.run([str(tools.promtool), "check", "rules", str(sync_generated.RULES_FILE)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def _with_static_annotations(tests: dict[str, Any]) -> dict[str, Any]:
    """Add each rule's untemplated annotations (runbooks) to its expected alerts; templated ones must be given."""
    by_alert = {r["alert"]: r.get("annotations", {}) for r in _rules()}
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            annotations = by_alert[check["alertname"]]
            for alert in check.get("exp_alerts", []):
                given = alert.get("exp_annotations", {})
                templated = {k for k, v in annotations.items() if "{{" in v}
                assert templated <= set(given), f"{case['name']}: give the rendered {templated - set(given)}"
                alert["exp_annotations"] = {**{k: v for k, v in annotations.items() if k not in templated}, **given}
    return tests


def test_promtool_unit_tests_pass(tools: Tools, tmp_path: Path) -> None:
    """promtool test rules: every alert fires when it should and stays silent when it should not."""
    tests = _with_static_annotations(yaml.safe_load(TESTS.read_text(encoding="utf-8")))
    shutil.copy(sync_generated.RULES_FILE, tmp_path / sync_generated.RULES_FILE.name)
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    done = subprocess.run([str(tools.promtool), "test", "rules", "tests.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """The unit tests cover each alert both ways."""
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(TESTS.read_text(encoding="utf-8"))["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {r["alert"] for r in _rules()}
    assert alerts == firing
    assert alerts == silent


def test_every_alert_says_what_to_do() -> None:
    """Each alert has a severity, a summary, a description and a runbook."""
    for rule in _rules():
        assert set(rule["annotations"]) >= REQUIRED_ANNOTATIONS, rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert len(rule["annotations"]["runbook"].splitlines()) >= 2, rule["alert"]


def test_new_drop_alert_carries_who_what_and_the_command() -> None:
    """The page names namespace, workload, pod, direction, policy and trap, and the curl that shows the explanation."""
    rule = next(r for r in _rules() if r["alert"] == "DropExplainerNewDropSignature")
    assert "sum by (namespace, workload, pod, direction, policy, trap)" in rule["expr"]
    assert "unless" in rule["expr"], "increase() alone misses a series' first increment"
    command = rule["annotations"]["command"]
    assert "kubectl -n drop-explainer port-forward svc/explainer 8080:80" in command
    assert "curl localhost:8080/namespaces/{{ $labels.namespace }}/pods/{{ $labels.pod }}/drops" in command


def test_rules_use_only_metrics_the_daemon_exposes() -> None:
    """Every drop_explainer_* name in an expression is one MetricsSink registers (with client suffixes)."""
    known = deploy_support.daemon_metric_names()
    used = {name for rule in _rules() for name in deploy_support.METRIC.findall(rule["expr"])}
    assert used
    assert used <= known, used - known
