module heapbot.dev/demo

go 1.24
