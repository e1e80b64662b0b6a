"""Shared fixtures live in tests/support/, one module per real part heapbot talks to."""

pytest_plugins = [
    "tests.support.redis",  # a real redis-server on a free port (or REDIS_URL)
    "tests.support.demo",  # the demo Go service from deploy/demo, built and run
    "tests.support.slack_standin",  # a local stand-in of Slack's Web API that records requests
    "tests.support.alerts",  # the webhook routes on a free port (`hooks`), alert payloads
]
