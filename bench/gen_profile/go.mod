module heapbot.dev/genprofile

go 1.24
