"""The fault tests share one serving world per module (tests/serving_world.py)."""

from tests.serving_world import start_modelserver, topics_env, world

__all__ = ["start_modelserver", "topics_env", "world"]
