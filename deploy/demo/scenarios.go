package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// limits bounds what the leaking scenarios keep alive.
type limits struct {
	maxItems      int // live entries of a heap leak (leakmap, slice)
	maxGoroutines int // live goroutines of a goroutine leak (blocked, ticker)
}

// scenario is one misbehaviour: tick runs n simulated requests.
type scenario struct {
	perTick int // simulated requests per tick at -rate 1
	tick    func(n int, lim limits)
}

var scenarios = map[string]scenario{
	"leakmap": {perTick: 2, tick: leakmapTick},
	"blocked": {perTick: 1, tick: blockedTick},
	"cache":   {perTick: 100, tick: cacheTick},
	"churn":   {perTick: 10, tick: churnTick},
	"slice":   {perTick: 5, tick: sliceTick},
	"ticker":  {perTick: 1, tick: tickerTick},
	"pool":    {perTick: 20, tick: poolTick},
}

// requestSeq numbers simulated requests across scenarios.
var requestSeq atomic.Int64

// ---------------------------------------------------------------------------
// leakmap: the gorilla/context leak. Per-request values are stored in a global
// map keyed by *http.Request and nobody calls Clear (no context.ClearHandler),
// so every request, its headers and its values stay reachable forever.

var (
	leakmapMu      sync.Mutex
	leakmapContext = map[*http.Request]map[string]any{}
)

type sessionUser struct {
	ID      int64
	Name    string
	Profile []byte
}

//go:noinline
func leakmapNewRequest(seq int64) *http.Request {
	return &http.Request{
		Method: "GET",
		URL:    &url.URL{Path: fmt.Sprintf("/api/orders/%d", seq)},
		Header: http.Header{"X-Request-Id": {fmt.Sprintf("req-%d", seq)}},
	}
}

// leakmapSetContext is gorilla/context.Set: it allocates the per-request map
// and the values put in it.
//
//go:noinline
func leakmapSetContext(r *http.Request, key string, value any) {
	leakmapMu.Lock()
	defer leakmapMu.Unlock()
	values, ok := leakmapContext[r]
	if !ok {
		values = make(map[string]any, 4)
		leakmapContext[r] = values
	}
	values[key] = value
}

//go:noinline
func leakmapLoadUser(seq int64) *sessionUser {
	return &sessionUser{ID: seq, Name: fmt.Sprintf("user-%d", seq), Profile: make([]byte, 1024)}
}

func leakmapTick(n int, lim limits) {
	for i := 0; i < n; i++ {
		if leakmapLen() >= lim.maxItems {
			return
		}
		seq := requestSeq.Add(1)
		r := leakmapNewRequest(seq)
		leakmapSetContext(r, "user", leakmapLoadUser(seq))
		leakmapSetContext(r, "started", time.Now())
	}
}

func leakmapLen() int {
	leakmapMu.Lock()
	defer leakmapMu.Unlock()
	return len(leakmapContext)
}

// ---------------------------------------------------------------------------
// blocked: each request starts a worker that sends its result on an
// unbuffered channel, but the handler already returned (timed out) and nobody
// receives: the goroutine and its result stay forever, parked in "chan send".

var blockedCount atomic.Int64

type workerResult struct {
	RequestID int64
	Body      []byte
}

//go:noinline
func blockedPrepareResult(seq int64) *workerResult {
	return &workerResult{RequestID: seq, Body: make([]byte, 512)}
}

// blockedSendResult is the goroutine that never finishes.
//
//go:noinline
func blockedSendResult(results chan<- *workerResult, seq int64) {
	result := blockedPrepareResult(seq)
	results <- result // nobody receives: blocks forever
	blockedCount.Add(-1)
}

//go:noinline
func blockedStartWorker(seq int64) {
	results := make(chan *workerResult) // unbuffered, and the caller never reads it
	blockedCount.Add(1)
	go blockedSendResult(results, seq)
}

func blockedTick(n int, lim limits) {
	for i := 0; i < n; i++ {
		if int(blockedCount.Load()) >= lim.maxGoroutines {
			return
		}
		blockedStartWorker(requestSeq.Add(1))
	}
}

// ---------------------------------------------------------------------------
// cache: a bounded cache (cacheCapacity entries, FIFO eviction). Memory grows
// while it fills, then plateaus: growth that is NOT a leak.

const cacheCapacity = 20000

var (
	cacheMu    sync.Mutex
	cacheItems = make(map[int64][]byte, cacheCapacity)
	cacheOrder = make([]int64, 0, cacheCapacity) // FIFO ring of keys
	cacheHead  int
)

//go:noinline
func cacheBuildEntry(key int64) []byte {
	entry := make([]byte, 256)
	copy(entry, fmt.Sprintf("price-of-item-%d", key))
	return entry
}

//go:noinline
func cachePut(key int64, value []byte) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if len(cacheOrder) < cacheCapacity {
		cacheOrder = append(cacheOrder, key)
	} else {
		delete(cacheItems, cacheOrder[cacheHead])
		cacheOrder[cacheHead] = key
		cacheHead = (cacheHead + 1) % cacheCapacity
	}
	cacheItems[key] = value
}

func cacheTick(n int, _ limits) {
	for i := 0; i < n; i++ {
		key := requestSeq.Add(1)
		cachePut(key, cacheBuildEntry(key))
	}
}

// ---------------------------------------------------------------------------
// churn: every request builds a large report and drops it at once.
// alloc_space climbs fast, inuse_space stays flat.

var churnChecksum atomic.Int64

//go:noinline
func churnRenderReport(seq int64) []byte {
	buf := make([]byte, 32*1024)
	for i := 0; i < len(buf); i += 512 {
		buf[i] = byte(seq + int64(i))
	}
	return buf
}

func churnTick(n int, _ limits) {
	for i := 0; i < n; i++ {
		report := churnRenderReport(requestSeq.Add(1))
		churnChecksum.Add(int64(report[0]))
	}
}

// ---------------------------------------------------------------------------
// slice: an audit log kept in a package-level slice that only ever grows.

type auditEvent struct {
	At      time.Time
	Seq     int64
	Payload []byte
}

var (
	sliceMu     sync.Mutex
	sliceEvents []auditEvent
)

//go:noinline
func sliceNewPayload(seq int64) []byte {
	payload := make([]byte, 200)
	payload[0] = byte(seq)
	return payload
}

//go:noinline
func sliceAppendEvent(seq int64, payload []byte) {
	sliceMu.Lock()
	defer sliceMu.Unlock()
	sliceEvents = append(sliceEvents, auditEvent{At: time.Now(), Seq: seq, Payload: payload})
}

func sliceTick(n int, lim limits) {
	for i := 0; i < n; i++ {
		if sliceLen() >= lim.maxItems {
			return
		}
		seq := requestSeq.Add(1)
		sliceAppendEvent(seq, sliceNewPayload(seq))
	}
}

func sliceLen() int {
	sliceMu.Lock()
	defer sliceMu.Unlock()
	return len(sliceEvents)
}

// ---------------------------------------------------------------------------
// ticker: each request starts a poller with its own time.Ticker that waits for
// a done channel nobody ever closes. Goroutines pile up parked in "select",
// and each keeps its ticker and session state alive.

var tickerCount atomic.Int64

type pollSession struct {
	ID    int64
	State []byte
}

//go:noinline
func tickerNewSession(seq int64) *pollSession {
	return &pollSession{ID: seq, State: make([]byte, 256)}
}

// tickerPollUntilDone is the goroutine that never returns.
//
//go:noinline
func tickerPollUntilDone(session *pollSession, done <-chan struct{}) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			session.State[0]++
		case <-done: // never closed
			tickerCount.Add(-1)
			return
		}
	}
}

//go:noinline
func tickerStartPoller(seq int64) {
	done := make(chan struct{})
	tickerCount.Add(1)
	go tickerPollUntilDone(tickerNewSession(seq), done)
}

func tickerTick(n int, lim limits) {
	for i := 0; i < n; i++ {
		if int(tickerCount.Load()) >= lim.maxGoroutines {
			return
		}
		tickerStartPoller(requestSeq.Add(1))
	}
}

// ---------------------------------------------------------------------------
// pool: encoding buffers reused through a sync.Pool. After warm-up almost
// nothing new is allocated: harmless.

var poolBuffers = sync.Pool{New: func() any { return poolNewBuffer() }}

var poolBytesEncoded atomic.Int64

//go:noinline
func poolNewBuffer() *bytes.Buffer {
	return bytes.NewBuffer(make([]byte, 0, 16*1024))
}

//go:noinline
func poolEncodeBatch(seq int64) {
	buf := poolBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	for i := 0; i < 64; i++ {
		buf.WriteString("order,")
		buf.WriteByte(byte('0' + (seq+int64(i))%10))
	}
	poolBytesEncoded.Add(int64(buf.Len()))
	poolBuffers.Put(buf)
}

func poolTick(n int, _ limits) {
	for i := 0; i < n; i++ {
		poolEncodeBatch(requestSeq.Add(1))
	}
}

// ---------------------------------------------------------------------------

// currentStats reports how far each scenario got, for tests and humans.
func currentStats() map[string]any {
	cacheMu.Lock()
	cacheLen := len(cacheItems)
	cacheMu.Unlock()
	return map[string]any{
		"requests":           requestSeq.Load(),
		"leakmap_entries":    leakmapLen(),
		"blocked_goroutines": blockedCount.Load(),
		"cache_entries":      cacheLen,
		"cache_capacity":     cacheCapacity,
		"slice_events":       sliceLen(),
		"ticker_goroutines":  tickerCount.Load(),
		"pool_bytes":         poolBytesEncoded.Load(),
	}
}
