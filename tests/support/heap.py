"""Real pprof heap profiles built in tests (profile.proto bytes, as Go writes them).

``heap_profile({"main.cachePut": 3_000_000})`` is a heap profile whose in-use bytes
per allocating function are the given values, each allocated under an own-code
caller, so summaries, sites and digests are computed from bytes the engine parses
exactly as it parses a Go service's ``/debug/pprof/heap``.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping

from bot.pprof import profile_pb2

OBJECT_SIZE = 512


def heap_profile(inuse: Mapping[str, int], *, caller: str = "main.handleRequest",
                 alloc_factor: int = 3, build_id: str = "b1", time_nanos: int = 0) -> bytes:
    """Gzipped heap profile: per function ``inuse[fn]`` bytes in use (objects of 512 B)."""
    p = profile_pb2.Profile()
    strings = [""]

    def s(text: str) -> int:
        strings.append(text)
        return len(strings) - 1

    for kind, unit in (("alloc_objects", "count"), ("alloc_space", "bytes"),
                       ("inuse_objects", "count"), ("inuse_space", "bytes")):
        p.sample_type.add(type=s(kind), unit=s(unit))
    p.period_type.type, p.period_type.unit = s("space"), s("bytes")
    p.period = 524288
    p.time_nanos = time_nanos
    p.mapping.add(id=1, filename=s("/srv/app"), build_id=s(build_id), memory_start=0x400000,
                  memory_limit=0x800000, has_functions=True)
    p.function.add(id=1, name=s(caller), filename=s("/src/app/main.go"), start_line=10)
    p.location.add(id=1, mapping_id=1, address=0x400100).line.add(function_id=1, line=20)
    for n, (fn, value) in enumerate(sorted(inuse.items()), start=2):
        p.function.add(id=n, name=s(fn), filename=s("/src/app/leak.go"), start_line=n * 10)
        p.location.add(id=n, mapping_id=1, address=0x400100 + n * 16).line.add(
            function_id=n, line=n * 10 + 2)
        objects = max(1, value // OBJECT_SIZE) if value else 0
        p.sample.add(location_id=[n, 1], value=[
            objects * alloc_factor, value * alloc_factor, objects, value])
    p.string_table.extend(strings)
    return gzip.compress(p.SerializeToString())
