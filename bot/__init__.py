"""heapbot: Go heap and goroutine profiling, in Slack and in the terminal."""

__version__ = "0.1.0"
