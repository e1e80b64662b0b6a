"""Prometheus metrics of heapbot itself, served at GET /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CAPTURES = Counter(
    "heapbot_captures_total", "Captures by service and outcome (ok, partial, failed, reused)",
    ["service", "outcome"],
)
CAPTURE_SECONDS = Histogram(
    "heapbot_capture_seconds", "Time to capture every instance of a service", ["service"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
COMMANDS = Counter("heapbot_commands_total", "/heap commands by name and outcome",
                   ["command", "outcome"])
ACK_SECONDS = Histogram("heapbot_ack_seconds", "Time from request to Slack ack",
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3))
REPLY_SECONDS = Histogram("heapbot_reply_seconds", "Time from command to posted reply",
                          ["command"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
SLACK_API_ERRORS = Counter("heapbot_slack_api_errors_total", "Slack Web API errors",
                           ["method", "error"])
QUEUE_DEPTH = Gauge("heapbot_queue_depth", "Jobs waiting in the Redis stream")
JOBS = Counter("heapbot_jobs_total", "Queued jobs by kind and outcome", ["kind", "outcome"])
REDIS_ERRORS = Counter("heapbot_redis_errors_total",
                       "Redis operations that failed, by operation and kind of error (connection, "
                       "timeout, cluster_down, moved, readonly, busy, response, other)",
                       ["operation", "kind"])
REDIS_RETRIES = Counter("heapbot_redis_retries_total",
                        "Redis commands retried after a connection error, timeout or failover, "
                        "by kind of error", ["kind"])


def redis_error_kind(exc: BaseException) -> str:
    """A short, bounded label for a Redis failure (never the message: it may hold data)."""
    name = type(exc).__name__
    for kind, names in (
        ("cluster_down", ("ClusterDownError", "MasterNotFoundError", "SlotNotCoveredError",
                          "MaxConnectionsError")),
        ("moved", ("MovedError", "AskError", "TryAgainError", "ClusterCrossSlotError")),
        ("readonly", ("ReadOnlyError",)),
        ("busy", ("BusyLoadingError",)),
        ("timeout", ("TimeoutError",)),
        ("connection", ("ConnectionError", "AuthenticationError", "OSError",
                        "ConnectionRefusedError", "ConnectionResetError")),
        ("response", ("ResponseError", "DataError", "WatchError", "NoScriptError",
                      "RedisClusterException", "LockError")),
    ):
        if name in names:
            return kind
    return "other"


def redis_error(operation: str, exc: BaseException) -> None:
    """Count one failed Redis operation."""
    REDIS_ERRORS.labels(operation, redis_error_kind(exc)).inc()
WEBHOOKS = Counter("heapbot_webhooks_total", "Webhook deliveries by source and outcome",
                   ["source", "outcome"])
