"""A small checker of JSON responses against OpenAPI 3.0 schemas: the subset MongoDB's
restore-job definitions use ($ref, allOf, properties, required, type, items, enum, pattern,
format, minimum, maximum, readOnly, writeOnly).

Stricter than OpenAPI in one way, on purpose: a property the schema does not declare is a
problem (OpenAPI allows it unless additionalProperties is false), since a fake that sends
fields the service does not is how a client comes to depend on them. A keyword it does not
know is an error, not a pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

# Keywords that describe and do not constrain.
ANNOTATIONS: Final = frozenset(
    {"description", "example", "externalDocs", "title", "deprecated", "default", "readOnly"}
)
CONSTRAINTS: Final = frozenset(
    {
        "$ref", "allOf", "properties", "required", "type", "items", "enum", "pattern", "format",
        "minimum", "maximum", "writeOnly", "nullable", "additionalProperties",
    }
)  # fmt: skip
DATE_TIME: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
UUID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
INT_RANGES: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class Problem:
    """Where a document disagrees with its schema: `path` (`delivery.url`, `hashes[].hash`;
    indexes are written []), the `keyword` it breaks (`undeclared` for a property the schema
    lacks) and what was found."""

    path: str
    keyword: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path or '(document)'}: {self.keyword}: {self.detail}"


class Definition:
    """The schemas of one OpenAPI document (or a copy holding components.schemas)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Any] = document["components"]["schemas"]

    @classmethod
    def load(cls, path: Path) -> Definition:
        """Read a JSON copy of (part of) a definition."""
        document: dict[str, Any] = json.loads(path.read_text())
        return cls(document)

    def check(self, name: str, value: Any) -> list[Problem]:
        """Every problem of `value` as a response body of components.schemas[name]."""
        return list(self._check(self.schemas[name], value, ""))

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        if set(schema) != {"$ref"}:
            raise ValueError(f"$ref with siblings is not supported: {schema}")
        prefix = "#/components/schemas/"
        if not isinstance(ref, str) or not ref.startswith(prefix):
            raise ValueError(f"unsupported $ref {ref!r}")
        return self._resolve(self.schemas[ref.removeprefix(prefix)])

    def _parts(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        """The schema and every schema it takes in through allOf, resolved."""
        schema = self._resolve(schema)
        unknown = set(schema) - ANNOTATIONS - CONSTRAINTS
        if any(not key.startswith("x-") for key in unknown):
            raise ValueError(f"unsupported keywords {sorted(unknown)} in {schema}")
        out = [schema]
        for part in schema.get("allOf", []):
            out += self._parts(part)
        return out

    def _check(self, schema: dict[str, Any], value: Any, path: str) -> Iterator[Problem]:
        parts = self._parts(schema)
        if value is None:
            if not any(p.get("nullable") for p in parts):
                yield Problem(path, "nullable", "null where the schema allows none")
            return
        for part in parts:
            if part.get("writeOnly"):
                yield Problem(path, "writeOnly", "a request-only field in a response")
            yield from self._scalar(part, value, path)
        if isinstance(value, dict):
            yield from self._object(parts, value, path)
        if isinstance(value, list):
            for part in parts:
                if "items" in part:
                    for item in value:
                        yield from self._check(part["items"], item, f"{path}[]")

    def _scalar(self, part: dict[str, Any], value: Any, path: str) -> Iterator[Problem]:
        kind = part.get("type")
        if kind is not None and not _is(kind, value):
            yield Problem(path, "type", f"{type(value).__name__} {value!r} is not {kind}")
            return
        if "enum" in part and value not in part["enum"]:
            yield Problem(path, "enum", f"{value!r} is none of {part['enum']}")
        if isinstance(value, str):
            if "pattern" in part and re.search(part["pattern"], value) is None:
                yield Problem(path, "pattern", f"{value!r} does not match {part['pattern']}")
            fmt = part.get("format")
            if fmt == "date-time" and not _date_time(value):
                yield Problem(path, "format", f"{value!r} is not a date-time")
            if fmt == "uuid" and UUID.match(value) is None:
                yield Problem(path, "format", f"{value!r} is not a uuid")
        if isinstance(value, int | float) and not isinstance(value, bool):
            low, high = INT_RANGES.get(part.get("format", ""), (None, None))
            if "minimum" in part and value < part["minimum"]:
                yield Problem(path, "minimum", f"{value} is below {part['minimum']}")
            if "maximum" in part and value > part["maximum"]:
                yield Problem(path, "maximum", f"{value} is above {part['maximum']}")
            if low is not None and high is not None and not low <= value <= high:
                yield Problem(path, "format", f"{value} is out of {part['format']}")

    def _object(
        self, parts: list[dict[str, Any]], value: dict[str, Any], path: str
    ) -> Iterator[Problem]:
        declared: dict[str, list[dict[str, Any]]] = {}
        for part in parts:
            for key, sub in part.get("properties", {}).items():
                declared.setdefault(key, []).append(sub)
            for key in part.get("required", []):
                if key not in value:
                    yield Problem(_join(path, key), "required", "missing")
        extra = [p["additionalProperties"] for p in parts if "additionalProperties" in p]
        for key, item in value.items():
            where = _join(path, key)
            if key in declared:
                for sub in declared[key]:
                    yield from self._check(sub, item, where)
            elif any(isinstance(e, dict) for e in extra):
                for e in extra:
                    if isinstance(e, dict):
                        yield from self._check(e, item, where)
            elif True not in extra:
                yield Problem(where, "undeclared", f"not a property of the schema: {item!r}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    types = {"string": str, "boolean": bool, "array": list, "object": dict}
    if kind not in types:
        raise ValueError(f"unsupported type {kind!r}")
    return isinstance(value, types[kind])


def _date_time(text: str) -> bool:
    if DATE_TIME.match(text) is None:
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
