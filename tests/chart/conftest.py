from __future__ import annotations

from pathlib import Path

import pytest
from chart_render import Helm, HelmUnavailableError, Rendered, find_or_fetch_helm


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    try:
        return find_or_fetch_helm()
    except HelmUnavailableError as error:
        # A chart that cannot be rendered is untested, not fine: fail loudly.
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def default_render(helm: Helm) -> Rendered:
    return helm.template()
