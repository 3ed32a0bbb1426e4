"""The bootstrap tests reuse the local run's world: the stack, two serving instances, a model server."""

from tests.pipelines.test_local_run import world

__all__ = ["world"]
