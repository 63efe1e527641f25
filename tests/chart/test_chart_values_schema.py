"""values.schema.json turns wrong values into a helm error naming the offending key."""

from __future__ import annotations

import json

import pytest
from chart_render import CHART_DIR, HELLO_SERVICE, Helm, Values

BAD_VALUES: dict[str, tuple[Values, str]] = {
    "replica count as a word": ({"replicaCount": "two"}, "replicaCount"),
    "unknown top-level key": ({"replicas": 3}, "replicas"),
    # A bare 1.2 in a values file is a float, and would render as an image tag of 1.2.
    "unquoted numeric image tag": ("image:\n  tag: 1.2\n", "tag"),
    "port out of range": ({"ports": {"data": 70000, "admin": 9090}}, "data"),
    "extra args as one string": ({"extraArgs": "--log-level debug"}, "extraArgs"),
    "boolean as a string": ({"rbac": {"create": "yes"}}, "create"),
    "unknown upstream protocol": (
        {"config": {"services": [{**HELLO_SERVICE, "upstream": "h3"}]}},
        "upstream",
    ),
    "endpoint without a port": (
        {"config": {"services": [{**HELLO_SERVICE, "endpoints": ["10.0.0.7"]}]}},
        "endpoints",
    ),
    "service without hosts": ({"config": {"services": [{"name": "hello"}]}}, "hosts"),
    "unknown upstream_tls key": (
        {"config": {"services": [{**HELLO_SERVICE, "upstream_tls": {"ca_file": "ca.pem"}}]}},
        "ca_file",
    ),
    "volume mount without a path": ({"extraVolumeMounts": [{"name": "ca"}]}, "mountPath"),
    "duration without a unit": (
        {"config": {"autoscaler": {"interval": 1}}},
        "interval",
    ),
    "unknown anti-affinity mode": ({"podAntiAffinity": "sometimes"}, "podAntiAffinity"),
    "zero workers": ({"workers": 0}, "workers"),
    "negative rapid-reset stream count": (
        {"config": {"limits": {"premature_reset_streams": -1}}},
        "premature_reset_streams",
    ),
    "zero premature-reset lifetime": (
        {"config": {"limits": {"premature_reset_lifetime": "0s"}}},
        "premature_reset_lifetime",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects(helm: Helm, case: str) -> None:
    values, offending_key = BAD_VALUES[case]
    error = helm.template_error(values)
    assert "schema" in error.lower()
    assert offending_key in error


def test_schema_accepts_the_documented_service(helm: Helm) -> None:
    config = helm.template({"config": {"services": [HELLO_SERVICE]}}).activator_config
    assert config["services"][0]["name"] == "hello"


def test_schema_closes_every_top_level_object() -> None:
    # Unknown keys are rejected at the top level and inside the chart's own settings
    # objects; `config` stays open so the activator's newer settings pass through.
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    open_objects = {
        name
        for name, prop in schema["properties"].items()
        if prop.get("type") == "object"
        and "properties" in prop
        and prop.get("additionalProperties") is not False
    }
    assert open_objects == {"config"}
