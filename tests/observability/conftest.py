"""The observability tests render the chart with the deployment tests' helm (tests/deploy)."""

from tests.deploy.conftest import helm

__all__ = ["helm"]
