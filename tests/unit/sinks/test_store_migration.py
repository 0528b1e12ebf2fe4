"""A drop store file of the previous schema (version 1, signatures keyed by pod) opens, migrated in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sink_fixtures import T0, MakeDrop

from drop_explainer.sinks import errors
from drop_explainer.sinks.store import SCHEMA_VERSION, DropStore

# The tables as version 1 of the store created them (git history of sinks/store.py), with one row of each.
V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE signatures (
    id TEXT PRIMARY KEY,
    source_workload TEXT NOT NULL, destination TEXT NOT NULL, port INTEGER NOT NULL,
    protocol TEXT NOT NULL, direction TEXT NOT NULL, policies TEXT NOT NULL, traps TEXT NOT NULL,
    pod_ns TEXT NOT NULL, pod_name TEXT NOT NULL,
    flows INTEGER NOT NULL, packets INTEGER NOT NULL, connections INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL, nodes TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE explanations (sig_id TEXT PRIMARY KEY, json TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX signatures_pod ON signatures (pod_ns, pod_name, last_seen_ns);
CREATE INDEX signatures_pod_name ON signatures (pod_name);
CREATE INDEX signatures_last_seen ON signatures (last_seen_ns);
CREATE TABLE samples (
    sig_id TEXT NOT NULL, seq INTEGER NOT NULL, flow_json TEXT NOT NULL, PRIMARY KEY (sig_id, seq)
) WITHOUT ROWID;
CREATE TABLE buckets (
    sig_id TEXT NOT NULL, minute INTEGER NOT NULL, flows INTEGER NOT NULL, connections INTEGER NOT NULL,
    PRIMARY KEY (sig_id, minute)
) WITHOUT ROWID;
CREATE INDEX buckets_minute ON buckets (minute);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO signatures VALUES ('0123456789abcdef', 'web/frontend-6d4b7c9f8', 'api/pod-b', 8080, 'TCP', 'ingress',
    'api/default-deny', '', 'api', 'pod-b', 3, 3, 1, 1764122280000000000, 1764122290000000000, '["n1"]');
INSERT INTO explanations VALUES ('0123456789abcdef', '{"headline": "DENIED"}', 'DENIED');
INSERT INTO buckets VALUES ('0123456789abcdef', 29402038, 3, 1);
"""


def v1_file(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(V1)
    db.close()
    return path


def test_a_version_1_file_opens_keeps_its_drops_and_is_migrated(tmp_path: Path, make_drop: MakeDrop) -> None:
    """Old rows stay readable (by pod, without a workload); new ones carry the workload; the file is now v2."""
    path = v1_file(tmp_path / "drops.db")
    with DropStore(path) as store:
        [old] = store.query(namespace="api", pod="pod-b")
        assert (old.id, old.flows, old.workload, old.explanation_text) == ("0123456789abcdef", 3, "", "DENIED")
        assert store.knows("0123456789abcdef")
        assert store.record(make_drop(time_ns=T0 + 60 * 1_000_000_000)) is True
        [new] = store.query(workload="api/pod-b")
        assert new.id != old.id
    with DropStore(path) as again:  # reopened as version 2: no second migration
        assert again.size() == 2
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    finally:
        db.close()


@pytest.mark.parametrize("version", ["0", "3", "99", "x"])
def test_an_unknown_schema_version_is_refused_naming_the_file(tmp_path: Path, version: str) -> None:
    """Neither the current version nor one we migrate: a clear error with the path, the file left untouched."""
    path = v1_file(tmp_path / "drops.db")
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    db.commit()
    db.close()
    with pytest.raises(errors.StoreUnreadable, match=f"drop store {path}: schema version {version}, ") as caught:
        DropStore(path)
    assert caught.value.path == str(path)
    db = sqlite3.connect(path)
    try:
        columns = [r[1] for r in db.execute("PRAGMA table_info(signatures)")]
    finally:
        db.close()
    assert "workload" not in columns
