"""Reading `ovs-vsctl -f json` output: the one place that knows OVSDB's JSON encoding."""
from __future__ import annotations

from typing import Any


def value(v: Any) -> Any:
    """OVSDB JSON -> Python: ["map", [[k, v]...]] -> dict, ["set", [...]] -> list, ["uuid", u] -> u."""
    if isinstance(v, list) and len(v) == 2 and v[0] in ("map", "set", "uuid"):
        kind, body = v
        if kind == "map":
            return {k: value(x) for k, x in body}
        if kind == "set":
            return [value(x) for x in body]
        return body
    return v


def rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per row, keyed by the columns asked for."""
    return [dict(zip(doc["headings"], (value(v) for v in row), strict=False)) for row in doc["data"]]


def documents(text: str, count: int) -> list[dict[str, Any]]:
    """`ovs-vsctl -f json -- list A -- list B ...` -> its `count` JSON documents, one per line.
    Other lines are skipped: on a loaded machine ovs-vsctl logs to stderr (e.g. "timeval|WARN|
    Unreasonably long 1383ms poll interval"), and a batched check reads both streams as one.
    Raises ValueError when fewer documents than `count` are there."""
    import json
    docs = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    if len(docs) < count:
        raise ValueError(f"{len(docs)} JSON documents, expected {count}")
    return docs[:count]
