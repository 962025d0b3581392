"""Shared test setup: import paths for the agent and host packages.

Fixtures live beside the tests that use them, in tests/*_fixtures.py or the test
module itself; this file only makes `camagent`, `camhost` and the helpers importable.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (os.path.join(ROOT, "agent"), os.path.join(ROOT, "hostside"),
             os.path.join(ROOT, "build", "vendor"), os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)
