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
