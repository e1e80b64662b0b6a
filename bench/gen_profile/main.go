// Command gen_profile writes a large, real Go heap profile for heapbot's
// benchmarks: every allocation is sampled (MemProfileRate=1) and each one is
// made at the end of a distinct call path, chosen by the decimal digits of a
// counter, so the profile holds one stack per allocation.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"
)

// kept holds every allocation so they all stay in use_space.
var kept [][]byte

// digitFuncs[d] is the function called for digit d; filled in init to break
// the initialisation cycle of mutually recursive functions.
var digitFuncs [10]func(path []int, size int)

func init() {
	digitFuncs = [10]func(path []int, size int){
		digit0, digit1, digit2, digit3, digit4, digit5, digit6, digit7, digit8, digit9,
	}
}

// descend calls the function of the next digit, or allocates at the end of
// the path. Each digitN has its own call site here (via its own body), so
// the frames differ by digit and by position.
func descend(path []int, size int) {
	if len(path) == 0 {
		allocate(size)
		return
	}
	digitFuncs[path[0]](path[1:], size)
}

//go:noinline
func allocate(size int) { kept = append(kept, make([]byte, size)) }

//go:noinline
func digit0(path []int, size int) { descend(path, size) }

//go:noinline
func digit1(path []int, size int) { descend(path, size) }

//go:noinline
func digit2(path []int, size int) { descend(path, size) }

//go:noinline
func digit3(path []int, size int) { descend(path, size) }

//go:noinline
func digit4(path []int, size int) { descend(path, size) }

//go:noinline
func digit5(path []int, size int) { descend(path, size) }

//go:noinline
func digit6(path []int, size int) { descend(path, size) }

//go:noinline
func digit7(path []int, size int) { descend(path, size) }

//go:noinline
func digit8(path []int, size int) { descend(path, size) }

//go:noinline
func digit9(path []int, size int) { descend(path, size) }

func main() {
	out := flag.String("o", "big_heap.pb.gz", "output path of the heap profile")
	stacks := flag.Int("stacks", 300000, "number of distinct allocation stacks")
	base := flag.Int("base", 10, "digits per position (2..10): 3 uses only digit0..digit2")
	depth := flag.Int("depth", 0, "digits per path (0: as many as stacks-1 needs); "+
		"a deep path with a small base gives deep mutually recursive stacks")
	flag.Parse()
	if *base < 2 || *base > 10 {
		log.Fatal("-base must be 2..10")
	}
	runtime.MemProfileRate = 1

	width := len(strconv.FormatInt(int64(*stacks-1), *base))
	if *depth > width {
		width = *depth
	}
	started := time.Now()
	path := make([]int, width)
	kept = make([][]byte, 0, *stacks)
	for i := 0; i < *stacks; i++ {
		for pos, n := width-1, i; pos >= 0; pos, n = pos-1, n / *base {
			path[pos] = n % *base
		}
		// Sizes vary so flat values differ between stacks.
		descend(path, 16+(i%7)*16)
	}
	runtime.GC() // the heap profile reflects the last completed GC
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	info, err := os.Stat(*out)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("wrote %s: %d bytes, %d allocation stacks of depth %d, kept %d allocations, %.1fs\n",
		*out, info.Size(), *stacks, width, len(kept), time.Since(started).Seconds())
}
