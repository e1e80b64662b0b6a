"""Shared fixtures live in tests/support/, one module per real part heapbot talks to."""

import os

from hypothesis import settings

# CI (`.ci/run` sets HYPOTHESIS_PROFILE=ci) replays the same examples every run, so a
# property test is red only on a change; a developer's run explores new inputs each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

pytest_plugins = [
    "tests.support.redis",  # a real redis-server on a free port (or REDIS_URL)
    "tests.support.demo",  # the demo Go service from deploy/demo, built and run
    "tests.support.slack_standin",  # a local stand-in of Slack's Web API that records requests
    "tests.support.alerts",  # the webhook routes on a free port (`hooks`), alert payloads
]
