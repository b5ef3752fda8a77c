"""The ``config`` part of the Helm chart's values.schema.json, generated from the agent's config models.

The chart renders ``values.config`` verbatim into the agent's config file, so
the chart's schema must accept exactly what ``feedagent validate`` accepts:
the same keys (``extra="forbid"`` becomes ``additionalProperties: false``),
types, enums and bounds. ``properties.config`` and every ``$defs`` entry named
``config.*`` are generated here; the rest of the file is written by hand.

    python -m tests.deploy.chart_schema --write     # after changing agent/config/models.py
    python -m tests.deploy.chart_schema --check     # exit 1 when the file is stale (what the test does)

Checks the models cannot express as JSON Schema (``admin.listen`` is
HOST:PORT, ``environment: custom`` needs endpoints, credentials need one
source each, ...) stay with ``feedagent validate``, which the tests run on
every config the chart renders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.config import models

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "feedagent"
SCHEMA_FILE = CHART / "values.schema.json"
PREFIX = "config."

_SCHEMA_MAPS = ("properties", "$defs", "patternProperties")  # keys whose values map names to schemas
_DROP = ("title", "default")  # noise for a values schema; values.yaml documents the defaults


def _clean(node: Any) -> Any:
    """Drop titles and defaults and rename $refs, recursively, without touching property names."""
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = "#/$defs/" + PREFIX + value.removeprefix("#/$defs/")
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _clean(schema) for name, schema in value.items()}
        elif key == "discriminator":
            continue  # OpenAPI keyword, not JSON Schema: oneOf with "type" consts does the job
        else:
            out[key] = _clean(value)
    return out


def config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema of ``values.config``, its ``$defs`` with prefixed names)."""
    raw = models.FeedAgentConfig.model_json_schema()
    defs = {PREFIX + name: _clean(schema) for name, schema in raw.pop("$defs", {}).items()}
    root = _clean(raw)
    root["description"] = ("The agent's config file (feedagent.yaml), rendered verbatim into the ConfigMap; "
                           "generated from agent/config/models.py.")
    # Exchange names are checked by a validator that JSON Schema cannot see.
    root["properties"]["exchanges"]["propertyNames"] = {"pattern": models._EXCHANGE_NAME.pattern}
    root["properties"]["exchanges"]["minProperties"] = 1
    return root, defs


def build(current: dict[str, Any]) -> dict[str, Any]:
    """``current`` (the file's content) with its generated parts replaced."""
    root, defs = config_schema()
    out = dict(current)
    out["properties"] = {**current["properties"], "config": root}
    hand_defs = {k: v for k, v in current.get("$defs", {}).items() if not k.startswith(PREFIX)}
    clash = set(hand_defs) & set(defs)
    if clash:
        raise SystemExit(f"hand-written $defs clash with generated ones: {sorted(clash)}")
    out["$defs"] = {**hand_defs, **dict(sorted(defs.items()))}
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite values.schema.json")
    group.add_argument("--check", action="store_true", help="exit 1 when values.schema.json is stale")
    args = parser.parse_args(argv)
    text = SCHEMA_FILE.read_text()
    wanted = render(build(json.loads(text)))
    if args.write:
        SCHEMA_FILE.write_text(wanted)
        return 0
    if text != wanted:
        print(f"{SCHEMA_FILE} is stale: run python -m tests.deploy.chart_schema --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
