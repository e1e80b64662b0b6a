"""Golden outputs of `go tool pprof` and helpers to run and parse it."""
