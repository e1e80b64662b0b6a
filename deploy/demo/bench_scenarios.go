package main

// Scenarios for bench/leaks (run only when named in -scenarios, never by "all"):
// a slow leak, a drip leak of a few kB/s (the speed real slow leaks have), a cache keyed by random ids that fills ever more slowly (most keys
// already cached), and a TTL cache flushed whole (a sawtooth).

import (
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"time"
)

// onlyByName lists the scenarios that "all" leaves out.
var onlyByName = map[string]bool{
	"slowleak": true, "dripleak": true, "fillcache": true, "ttlcache": true,
}

// multipliers holds each selected scenario's own rate factor: "churn:20" runs
// churn at 20 times -rate (default 1).
var multipliers = map[string]float64{}

// demoSeed seeds the scenarios that draw random keys (env DEMO_SEED).
var demoSeed int64 = 1

// parseScenarioFactors reads "-scenarios leakmap,churn:20": parseScenarios on the
// names, each with its rate factor; "all" leaves out the benchmark-only scenarios.
func parseScenarioFactors(list string) ([]string, error) {
	var names []string
	factors := map[string]float64{}
	for _, item := range strings.Split(list, ",") {
		name, factor, hasFactor := strings.Cut(strings.TrimSpace(item), ":")
		factors[name] = 1
		if hasFactor {
			v, err := strconv.ParseFloat(factor, 64)
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("scenario %q: rate factor must be a positive number", item)
			}
			factors[name] = v
		}
		names = append(names, name)
	}
	selected, err := parseScenarios(strings.Join(names, ","))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range selected {
		if onlyByName[name] && factors[name] == 0 {
			continue // asked for "all": benchmark scenarios run only by name
		}
		multipliers[name] = factors[name]
		if multipliers[name] == 0 {
			multipliers[name] = 1
		}
		out = append(out, name)
	}
	return out, nil
}

func init() {
	if v, err := strconv.ParseInt(envOr("DEMO_SEED", "1"), 10, 64); err == nil {
		demoSeed = v
	}
	scenarios["slowleak"] = scenario{perTick: 2, tick: slowleakTick}
	scenarios["dripleak"] = scenario{perTick: 1, tick: dripleakTick}
	scenarios["fillcache"] = scenario{perTick: 100, tick: fillcacheTick}
	scenarios["ttlcache"] = scenario{perTick: 40, tick: ttlcacheTick}
}

// slowleak: a per-tenant audit trail nobody trims, growing a few kB per second.

var (
	slowleakMu      sync.Mutex
	slowleakRecords [][]byte
)

//go:noinline
func slowleakKeepRecord(seq int64) []byte {
	record := make([]byte, 256)
	record[0] = byte(seq)
	return record
}

func slowleakTick(n int, lim limits) {
	slowleakMu.Lock()
	defer slowleakMu.Unlock()
	for i := 0; i < n && len(slowleakRecords) < lim.maxItems; i++ {
		slowleakRecords = append(slowleakRecords, slowleakKeepRecord(requestSeq.Add(1)))
	}
}

// dripleak: per-connection state kept after the connection closed, 10 records of
// 256 B a second at rate 1 (about 2.7 kB/s with the slice that holds them): the
// speed at which real services leak for days before anyone notices.

var (
	dripleakMu      sync.Mutex
	dripleakRecords [][]byte
)

//go:noinline
func dripleakKeepState(seq int64) []byte {
	state := make([]byte, 256)
	state[0] = byte(seq)
	return state
}

func dripleakTick(n int, lim limits) {
	dripleakMu.Lock()
	defer dripleakMu.Unlock()
	for i := 0; i < n && len(dripleakRecords) < lim.maxItems; i++ {
		dripleakRecords = append(dripleakRecords, dripleakKeepState(requestSeq.Add(1)))
	}
}

// fillcache: prices cached by product id, ids drawn at random from a catalogue of
// fillcacheCatalogue products. Each miss adds an entry; as the cache fills, most
// lookups hit, so it grows ever more slowly and stops at the catalogue's size:
// bounded, though it can take the whole observation window to get there.

const fillcacheCatalogue = 30000

var (
	fillcacheMu    sync.Mutex
	fillcacheItems = make(map[int64][]byte, fillcacheCatalogue)
	fillcacheRand  = newRand(7)
)

//go:noinline
func fillcacheLoadPrice(id int64) []byte {
	entry := make([]byte, 512)
	entry[0] = byte(id)
	return entry
}

func fillcacheTick(n int, _ limits) {
	fillcacheMu.Lock()
	defer fillcacheMu.Unlock()
	for i := 0; i < n; i++ {
		id := fillcacheRand.Int63n(fillcacheCatalogue)
		if _, ok := fillcacheItems[id]; !ok {
			fillcacheItems[id] = fillcacheLoadPrice(id)
		}
	}
}

// ttlcache: session tokens kept until the whole cache is flushed every
// ttlcacheFlush (a TTL sweep): the heap rises and falls in a sawtooth.

const ttlcacheFlush = 15 * time.Second

var (
	ttlcacheMu      sync.Mutex
	ttlcacheItems   = map[int64][]byte{}
	ttlcacheFlushed = time.Now()
)

//go:noinline
func ttlcacheIssueToken(seq int64) []byte {
	token := make([]byte, 384)
	token[0] = byte(seq)
	return token
}

func ttlcacheTick(n int, _ limits) {
	ttlcacheMu.Lock()
	defer ttlcacheMu.Unlock()
	if time.Since(ttlcacheFlushed) >= ttlcacheFlush {
		ttlcacheItems = map[int64][]byte{}
		ttlcacheFlushed = time.Now()
	}
	for i := 0; i < n; i++ {
		seq := requestSeq.Add(1)
		ttlcacheItems[seq] = ttlcacheIssueToken(seq)
	}
}

// newRand is a seeded source (DEMO_SEED varies it between benchmark runs).
func newRand(offset int64) *rand.Rand {
	return rand.New(rand.NewSource(demoSeed + offset))
}
