"""Read a saved cluster state: the YAML or JSON that kubectl writes.

Accepts a file or a directory of them, single objects, ``kind: List`` (and
the typed ``PodList``... that the API returns) and multi-document YAML.
Everything is parsed before anything is returned: a broken file is an
error naming the file, the object and the field, never half a state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from drop_explainer.cluster import parsing
from drop_explainer.cluster.errors import ObjectError, StateFileError
from drop_explainer.cluster.state import ClusterState

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
    for file in files:
        objs.extend(parse_documents(str(file), file.read_text(encoding="utf-8")))
    return ClusterState.build(objs)


def parse_documents(name: str, text: str) -> list[object]:
    """Parse one file's text; ``name`` is used in errors."""
    try:
        docs = [json.loads(text)] if text.lstrip().startswith(("{", "[")) else list(yaml.load_all(text, _Loader))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise StateFileError(name, f"not valid YAML or JSON: {exc}") from None
    out: list[object] = []
    for data in _flatten(name, docs):
        kind = data.get("kind")
        parse = parsing.PARSERS.get(kind) if isinstance(kind, str) else None
        if parse is None:
            continue  # other kinds (Deployments, Events...) are not ours to read
        obj_name = parsing.object_name(data)
        try:
            out.append(parse(data, obj_name))
        except ObjectError as exc:
            raise StateFileError(name, exc.reason, obj=exc.obj, field=exc.field) from None
    return out


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
            # Typed lists (PodList) from the API omit kind on their items.
            item_kind = kind[: -len("List")] if kind != "List" else None
            yield from _flatten(name, [_with_kind(i, item_kind) for i in items])
            continue
        yield doc


def _with_kind(item: Any, kind: str | None) -> Any:
    if kind and isinstance(item, Mapping) and "kind" not in item:
        return {**item, "kind": kind}
    return item
