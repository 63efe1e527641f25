"""The chart lints clean and renders manifests that Kubernetes' own schemas accept.

Manifests are validated offline with kubernetes-validate, which ships the Kubernetes
OpenAPI-derived JSON schemas for each minor version. Its strict mode rejects fields a
kind does not have, which catches misspelt or misplaced keys that an API server would
silently drop. The ServiceMonitor is a CRD with no bundled schema; it is checked by
structure in test_chart_manifests.py.
"""

from __future__ import annotations

import kubernetes_validate
import pytest
from chart_render import KUBE_VERSION_FLOOR, VALUE_SETS, Helm, Manifest, Rendered

# The chart's floor and the newest Kubernetes the validator knows.
KUBE_VERSIONS = [KUBE_VERSION_FLOOR, kubernetes_validate.latest_version()]
KINDS_WITHOUT_BUNDLED_SCHEMA = {"ServiceMonitor"}


def _identify(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def test_default_values_lint_strict(helm: Helm) -> None:
    result = helm.lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_value_set_lints_strict(helm: Helm, value_set: str) -> None:
    result = helm.lint(VALUE_SETS[value_set])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_manifest_matches_kubernetes_schema(
    helm: Helm, value_set: str, kube_version: str
) -> None:
    rendered = helm.template(VALUE_SETS[value_set], kube_version=kube_version)
    validated = []
    for manifest in rendered:
        if manifest["kind"] in KINDS_WITHOUT_BUNDLED_SCHEMA:
            continue
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.path)
            pytest.fail(f"{_identify(manifest)} at {path}: {error.message}")
        validated.append(_identify(manifest))
    # The core objects are always there, so an empty render cannot pass.
    assert {"Deployment", "ConfigMap", "Service"} <= {name.split("/")[0] for name in validated}


def test_validator_rejects_a_misplaced_field(default_render: Rendered) -> None:
    # The validation above is only worth something if strict mode catches a stray key.
    deployment = default_render.deployment
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION_FLOOR, strict=True)


def test_resource_names_are_unique_per_kind_and_namespace(helm: Helm) -> None:
    rendered = helm.template(VALUE_SETS["everything"])
    keys = [
        (manifest["kind"], manifest["metadata"].get("namespace"), manifest["metadata"]["name"])
        for manifest in rendered
    ]
    assert len(keys) == len(set(keys)), keys
