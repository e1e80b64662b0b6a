// Command demo is a small Go service whose heap and goroutines misbehave on
// purpose, so heapbot has something real to profile. Each scenario runs on its
// own ticker (no external traffic needed) and allocates in its own, clearly
// named function, so the allocation sites show by name in /debug/pprof/heap
// and /debug/pprof/goroutine. See README.md for what each one simulates.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/* on http.DefaultServeMux
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
// A different version changes the binary, hence its GNU build id, which
// runtime/pprof writes into every heap profile's main mapping.
var version = "dev"

// tickInterval is how often every scenario simulates a batch of requests;
// -rate multiplies the batch size, not the tick.
const tickInterval = 100 * time.Millisecond

func envOr(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return fallback
}

func main() {
	addr := flag.String("addr", envOr("DEMO_ADDR", "127.0.0.1:6060"), "listen address (env DEMO_ADDR)")
	scenarioList := flag.String("scenarios", envOr("DEMO_SCENARIOS", "all"),
		"comma-separated scenarios to run, or all (env DEMO_SCENARIOS): "+strings.Join(scenarioNames(), ","))
	rateText := envOr("DEMO_RATE", "1")
	rate := flag.Float64("rate", 0, "multiplier of the simulated request rate (env DEMO_RATE, default 1)")
	mprText := envOr("DEMO_MEMPROFILERATE", strconv.Itoa(runtime.MemProfileRate))
	memProfileRate := flag.Int("memprofilerate", 0,
		"runtime.MemProfileRate: bytes per heap sample (env DEMO_MEMPROFILERATE, default Go's 524288; 1 = every allocation)")
	maxItems := flag.Int("max-items", 0,
		"ceiling of live items each heap leak keeps, so a forgotten demo cannot eat the machine (env DEMO_MAX_ITEMS, default 50000)")
	maxGoroutines := flag.Int("max-goroutines", 0,
		"ceiling of goroutines each goroutine leak keeps (env DEMO_MAX_GOROUTINES, default 5000)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Println(version)
		return
	}
	if *rate == 0 {
		v, err := strconv.ParseFloat(rateText, 64)
		if err != nil || v <= 0 {
			log.Fatalf("DEMO_RATE must be a positive number, got %q", rateText)
		}
		*rate = v
	}
	if *memProfileRate == 0 {
		v, err := strconv.Atoi(mprText)
		if err != nil || v <= 0 {
			log.Fatalf("DEMO_MEMPROFILERATE must be a positive integer, got %q", mprText)
		}
		*memProfileRate = v
	}
	*maxItems = positiveIntOr(*maxItems, "DEMO_MAX_ITEMS", 50000)
	*maxGoroutines = positiveIntOr(*maxGoroutines, "DEMO_MAX_GOROUTINES", 5000)
	// Must be set before the allocations it should sample.
	runtime.MemProfileRate = *memProfileRate

	selected, err := parseScenarioFactors(*scenarioList)
	if err != nil {
		log.Fatal(err)
	}

	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	started := time.Now()
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"status":    "ok",
			"version":   version,
			"scenarios": selected,
			"rate":      *rate,
			"uptime_s":  time.Since(started).Seconds(),
		})
	})
	http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(currentStats())
	})

	limits := limits{maxItems: *maxItems, maxGoroutines: *maxGoroutines}
	for _, name := range selected {
		go runScenario(name, scenarios[name], *rate*multipliers[name], limits)
	}

	// The actual address (":0" picks a free port) goes to stdout so a parent
	// process can read it.
	fmt.Printf("demo %s listening on http://%s scenarios=%s rate=%g memprofilerate=%d\n",
		version, listener.Addr(), strings.Join(selected, ","), *rate, *memProfileRate)
	server := &http.Server{ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := server.Serve(listener); err != nil && err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	_ = server.Close()
}

// positiveIntOr returns the flag value if set, else the environment
// variable, else the default; a bad environment value stops the program.
func positiveIntOr(flagValue int, envName string, fallback int) int {
	if flagValue > 0 {
		return flagValue
	}
	v, err := strconv.Atoi(envOr(envName, strconv.Itoa(fallback)))
	if err != nil || v <= 0 {
		log.Fatalf("%s must be a positive integer", envName)
	}
	return v
}

func parseScenarios(list string) ([]string, error) {
	list = strings.TrimSpace(list)
	if list == "" || list == "all" {
		return scenarioNames(), nil
	}
	var out []string
	seen := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			continue
		}
		if _, ok := scenarios[name]; !ok {
			return nil, fmt.Errorf("unknown scenario %q; known: %s", name, strings.Join(scenarioNames(), ","))
		}
		seen[name] = true
		out = append(out, name)
	}
	sort.Strings(out)
	return out, nil
}

func scenarioNames() []string {
	names := make([]string, 0, len(scenarios))
	for name := range scenarios {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// runScenario calls the scenario's tick function every tickInterval with the
// number of simulated requests due, keeping fractional requests for later so
// low rates still make progress.
func runScenario(name string, s scenario, rate float64, lim limits) {
	ticker := time.NewTicker(tickInterval)
	defer ticker.Stop()
	var due float64
	for range ticker.C {
		due += float64(s.perTick) * rate
		n := int(due)
		due -= float64(n)
		if n > 0 {
			s.tick(n, lim)
		}
	}
}
