"""The chart's README documents every value, and NOTES.txt renders."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from chart_render import CHART_DIR, FULLNAME_DEFAULT, Helm

# Values whose contents are Kubernetes objects or free-form maps, documented as a whole.
DOCUMENTED_AS_A_WHOLE = {
    "podAnnotations",
    "podSecurityContext",
    "securityContext",
    "resources",
}


def _value_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in DOCUMENTED_AS_A_WHOLE:
            yield from _value_paths(value, f"{path}.")
        else:
            yield path


def _readme_keys() -> set[str]:
    readme = (CHART_DIR / "README.md").read_text()
    return set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))


def test_readme_lists_every_value() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    paths = set(_value_paths(values))
    assert len(paths) > 50
    assert sorted(paths - _readme_keys()) == []


def test_readme_lists_no_value_that_does_not_exist() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert sorted(_readme_keys() - set(_value_paths(values))) == []


def test_notes_name_the_services(helm: Helm) -> None:
    result = helm.install_dry_run()
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"{FULLNAME_DEFAULT}.serving.svc:80" in notes
    assert f"{FULLNAME_DEFAULT}-admin.serving.svc:9090" in notes
    assert "config.services is empty" in notes


def test_notes_drop_the_empty_services_warning_once_configured(helm: Helm) -> None:
    result = helm.install_dry_run(
        {"config": {"services": [{"name": "hello", "hosts": ["hello.example.com"]}]}}
    )
    assert result.returncode == 0, result.stderr
    assert "config.services is empty" not in result.stdout.split("NOTES:", 1)[1]
