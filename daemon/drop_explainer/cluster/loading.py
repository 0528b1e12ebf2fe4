"""Read a saved cluster state: the YAML or JSON that kubectl writes.

Accepts a file or a directory of them, single objects, ``kind: List`` (and
the typed ``PodList``... that the API returns) and multi-document YAML.
Everything is parsed before anything is returned: a broken file is an
error naming the file, the object and the field, never half a state.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from drop_explainer.cluster import enforcer, parsing
from drop_explainer.cluster.errors import ObjectError, StateFileError
from drop_explainer.cluster.state import ClusterState
from drop_explainer.policy.kinds import cilium
from drop_explainer.policy.model import CompiledPolicy, RefusedPolicy

_SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's loader is ~10x faster on a 5,000-pod state; the pure one gives the same result.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_state(path: str | Path) -> ClusterState:
    """Load a state file or directory; raises StateFileError naming the fault."""
    root = Path(path)
    if not root.exists():
        raise StateFileError(str(root), "no such file or directory")
    files = sorted(p for p in root.rglob("*") if p.suffix in _SUFFIXES and p.is_file()) if root.is_dir() else [root]
    if not files:
        raise StateFileError(str(root), "no .yaml, .yml or .json files in this directory")
    objs: list[object] = []
    raw: list[Mapping[str, Any]] = []
    # A big state is millions of new, acyclic objects: the cycle collector
    # would rescan them again and again (a third of the load time) for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for file in files:
            objs.extend(parse_documents(str(file), file.read_text(encoding="utf-8"), inventory=raw))
    finally:
        if collecting:
            gc.enable()
    state = ClusterState.build(objs).with_not_evaluated(
        tuple(entry for obj in raw if (entry := enforcer.not_evaluated(obj)) is not None))
    if any(obj.get("kind") in enforcer.WORKLOAD_KINDS for obj in raw):
        # Saved with DaemonSets or CRDs (kubectl get ds,crd,...): say who enforces policy.
        return state.with_enforcer(enforcer.detect(enforcer.Inventory.from_objects(raw)))
    return state


def parse_documents(name: str, text: str, *, inventory: list[Mapping[str, Any]] | None = None) -> list[object]:
    """Parse one file's text; ``name`` is used in errors.

    With ``inventory``, the raw objects that enforcer detection reads (DaemonSets, CRDs, Nodes...) are
    appended to it as well.
    """
    try:
        docs = _documents(text)
    except yaml.YAMLError as exc:
        raise StateFileError(name, f"not valid YAML or JSON: {exc}") from None
    out: list[object] = []
    for data in _flatten(name, docs):
        kind = data.get("kind")
        if inventory is not None and kind in enforcer.INVENTORY_KINDS:
            inventory.append(data)
        if cilium.is_cilium_policy(data):
            if inventory is not None:
                inventory.append(data)
            out.append(compile_cilium(data))
            continue
        if enforcer.not_evaluated(data) is not None:
            # Kept and named, never parsed as networking.k8s.io's NetworkPolicy (crd.antrea.io and
            # projectcalico.org have kinds of that name, with other fields).
            if inventory is not None:
                inventory.append(data)
            continue
        parse = parsing.parser_for(data)
        if parse is None:
            continue  # other kinds (Deployments, Events...) and other groups' kinds are not ours to read
        obj_name = parsing.object_name(data)
        try:
            out.append(parse(data, obj_name))
        except ObjectError as exc:
            raise StateFileError(name, exc.reason, obj=exc.obj, field=exc.field) from None
    return out


def compile_cilium(data: Mapping[str, Any]) -> CompiledPolicy | RefusedPolicy:
    """A CNP/CCNP in the rule model, or refused as Cilium's validation refuses it (no effect, not fatal)."""
    try:
        return cilium.compile_object(data)
    except cilium.Invalid as exc:
        kind = str(data.get("kind"))
        meta = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}
        assert isinstance(meta, Mapping)
        namespace = str(meta.get("namespace") or "default") if kind == cilium.CNP else None
        return RefusedPolicy(kind, namespace, str(meta.get("name") or ""), exc.field, exc.reason)


def _documents(text: str) -> list[Any]:
    # JSON first for speed, but a brace only hints at JSON: flow-style YAML
    # and multi-document YAML of JSON objects start with one too.
    if text.lstrip().startswith(("{", "[")):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError:
            pass
    try:
        return _plain_yaml_documents(text)
    except _UnusualYAML:
        return list(yaml.load_all(text, _Loader))


class _UnusualYAML(Exception):
    """Anchors, aliases, merge keys, explicit tags or complex keys: left to PyYAML's own loader."""


_STR = "tag:yaml.org,2002:str"
_MAP_TAGS = (None, "!", "tag:yaml.org,2002:map")
_SEQ_TAGS = (None, "!", "tag:yaml.org,2002:seq")
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp"))
_LIST = object()
_NO_KEY = object()


def _plain_yaml_documents(text: str) -> list[Any]:
    """yaml.load_all for the plain YAML kubectl writes, 3-8x faster.

    PyYAML's composer and constructor spend most of a large load in Python,
    resolving and wrapping every scalar in a node; building the objects
    straight from libyaml's events, resolving each distinct plain scalar
    once, gives the same objects. Anything beyond plain maps, lists and
    scalars raises _UnusualYAML so that PyYAML itself handles it.
    """
    resolver = _Loader("")
    plain: dict[str, Any] = {}
    docs: list[Any] = []
    parents: list[tuple[Any, Any]] = []  # (container, pending key) of each enclosing container
    cur: Any = None  # the open dict or list, None between documents
    key: Any = _NO_KEY  # the open dict's pending key, _NO_KEY when it waits for one, _LIST for a list
    scalar, alias = yaml.ScalarEvent, yaml.AliasEvent
    map_start, map_end, seq_start, seq_end = (yaml.MappingStartEvent, yaml.MappingEndEvent,
                                              yaml.SequenceStartEvent, yaml.SequenceEndEvent)
    events: Iterator[Any] = yaml.parse(text, Loader=_Loader)  # the stubs know only the Event base class
    for ev in events:
        cls = ev.__class__
        if cls is scalar:
            if ev.anchor is not None:
                raise _UnusualYAML
            value = ev.value
            if ev.tag is None or ev.tag == "!":
                if ev.implicit[0]:
                    found = plain.get(value, _NO_KEY)
                    value = _resolve_plain(resolver, plain, value) if found is _NO_KEY else found
            elif ev.tag != _STR:
                raise _UnusualYAML
        elif cls is map_start or cls is seq_start:
            if ev.anchor is not None or ev.tag not in (_MAP_TAGS if cls is map_start else _SEQ_TAGS):
                raise _UnusualYAML
            if key is _NO_KEY and cur is not None:
                raise _UnusualYAML  # a mapping or list used as a key
            parents.append((cur, key))
            cur, key = ({}, _NO_KEY) if cls is map_start else ([], _LIST)
            continue
        elif cls is map_end or cls is seq_end:
            value = cur
            cur, key = parents.pop()
        elif cls is alias:
            raise _UnusualYAML
        else:
            continue  # stream and document boundaries
        if key is _LIST:
            cur.append(value)
        elif cur is None:
            docs.append(value)
        elif key is _NO_KEY:
            key = value
        else:
            cur[key] = value
            key = _NO_KEY
    return docs


def _resolve_plain(resolver: Any, cache: dict[str, Any], value: str) -> Any:
    tag = resolver.resolve(yaml.ScalarNode, value, (True, False))
    if tag not in _SCALAR_TAGS:
        raise _UnusualYAML  # "<<" merge keys and "=" value keys
    result = value if tag == _STR else resolver.yaml_constructors[tag](resolver, yaml.ScalarNode(tag, value))
    cache[value] = result
    return result


def _flatten(name: str, docs: list[Any]) -> Iterator[Mapping[str, Any]]:
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, list):
            yield from _flatten(name, doc)
            continue
        if not isinstance(doc, Mapping):
            raise StateFileError(name, f"expected Kubernetes objects, found a {type(doc).__name__}")
        kind = doc.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise StateFileError(name, "items of a List must be a list", obj=kind, field="items")
            # Typed lists (PodList) from the API omit kind and apiVersion on their items.
            item_kind = kind[: -len("List")] if kind != "List" else None
            # A non-core list's group is its items' (a crd.projectcalico.org/v1 NetworkPolicyList holds
            # Calico's NetworkPolicies); "v1" is also what hand-made lists say of anything, so it is not passed on.
            api = doc.get("apiVersion") if item_kind and "/" in str(doc.get("apiVersion") or "") else None
            yield from _flatten(name, [_with_kind(i, item_kind, api) for i in items])
            continue
        yield doc


def _with_kind(item: Any, kind: str | None, api: Any = None) -> Any:
    if kind and isinstance(item, Mapping) and "kind" not in item:
        return {**item, "kind": kind, **({"apiVersion": api} if api and "apiVersion" not in item else {})}
    return item
