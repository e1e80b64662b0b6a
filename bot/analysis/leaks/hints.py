"""Known leak patterns (from real hunts) matched against allocation sites and wait states."""

from __future__ import annotations

_MAP_SITES = ("runtime.mapassign", "runtime.makemap", "internal/runtime/maps.",
              "runtime.growWork", "runtime.hashGrow", "runtime.evacuate")
_TIMER_SITES = ("time.After", "time.NewTimer", "time.NewTicker", "time.newTimer",
                "runtime.newTimer", "time.Tick", "runtime.(*timer)", "time.AfterFunc")
_REFLECT_POOL = ("reflect.MakeSlice", "reflect.Value.Call", "reflect.Value.call",
                 "reflect.unsafe_NewArray", "reflect.New", "reflect.MakeMap")
_REFLECT_MAP = ("reflect.mapassign", "encoding/gob.", "reflect.Value.SetMapIndex")
_CACHE_WORDS = ("cache", "session", "store", "registry", "memo")


def heap_hint(function: str, own_caller: str, *, bounded: bool = False) -> str:
    """A known leak pattern whose fingerprint matches this allocation site."""
    names = f"{function} {own_caller}"
    lowered = names.lower()
    if "gorilla/context" in names or ("context" in lowered and "request" in lowered
                                      and "map" in lowered):
        return ("A global map keyed by *http.Request (gorilla/context without "
                "context.ClearHandler): entries are never deleted. Wrap handlers in "
                "context.ClearHandler, or keep request values in r.Context().")
    if function.startswith(_REFLECT_MAP) or ("gob" in lowered and "map" in lowered):
        return ("gob/reflect map decoding (reflect.mapassign) into a long-lived map keeps "
                "every key it ever decoded: decode into a fresh map, or delete old keys.")
    if function.startswith(_REFLECT_POOL):
        return ("Values made with reflect (reflect.MakeSlice / reflect.Value.Call) kept in a "
                "pool that only grows, like the router pool of 800 in the tango story: bound "
                "the pool or let the values go.")
    if function.startswith(_TIMER_SITES):
        return ("time.After / time.NewTicker per request or per loop iteration: each timer "
                "lives until it fires or is stopped. Reuse one time.NewTimer with Reset, and "
                "Stop every ticker.")
    if function.startswith("runtime.growslice") and own_caller:
        return (f"append in {own_caller} grows a slice that is never truncated (a package-level "
                "slice or a field that only grows): cap it, flush it, or copy the tail.")
    if function.startswith(_MAP_SITES):
        return ("A map that only gains keys: entries are added (per request or per key) and "
                "never deleted. If it is keyed by *http.Request (gorilla/context without "
                "ClearHandler), delete the entry when the request ends or use r.Context().")
    if bounded:
        return ("Bounded: it grew and then stopped, like a cache filling up to its size. "
                "Check its capacity against the memory you can give it.")
    if any(w in lowered for w in _CACHE_WORDS):
        return ("A per-key cache or session store without eviction grows with the number of "
                "distinct keys: bound it (LRU, TTL) or store values instead of pointers.")
    return ""


GOROUTINE_HINTS = {
    "chan send": ("Senders park forever when nobody receives (the caller gave up): give the "
                  "channel a buffer of 1, or select on ctx.Done() next to the send."),
    "chan receive": ("Receivers wait for a value or a close() that never comes: close the "
                     "channel when the producer ends, or select on ctx.Done()."),
    "select": ("Each waits in select on channels nobody closes or sends to (a per-request "
               "poller or ticker): add a ctx.Done() case, and Stop tickers."),
    "select (no cases)": "`select {}` blocks forever: was it meant to run once per process?",
    "mutex": ("Goroutines queue on a lock that stays held (a deadlock or a slow critical "
              "section): `?debug=2` shows who holds it."),
    "semacquire": ("Goroutines wait on a semaphore (WaitGroup, Cond or a lock) that is never "
                   "released."),
}

