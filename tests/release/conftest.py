"""Fixtures of the release tests (defined in iam_world.py, which the tests also import helpers from)."""

from iam_world import iam_world

__all__ = ["iam_world"]
