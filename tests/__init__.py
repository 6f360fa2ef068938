"""The test suite. ``REPO`` is the repository root, for the tests that run its scripts or read
its files (light on purpose: the fixture builders are in :mod:`tests.fixtures`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
