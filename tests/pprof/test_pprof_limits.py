"""A gzip bomb is refused without being held in memory; a large genuine profile still inflates."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap

import pytest

from bot.errors import ProfileError
from bot.pprof.limits import Limits, MiB, inflate

BOMB_PROBE = textwrap.dedent("""
    import resource, zlib
    from bot.errors import ProfileError
    from bot.pprof.limits import inflate
    co = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(4 << 20)
    bomb = b"".join([*(co.compress(block) for _ in range(512)), co.flush()])  # 2 GiB inflated
    del block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        inflate(bomb)
    except ProfileError as exc:
        print("refused", exc.message)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("grew_mib", (after - before) // 1024)
""")


def test_gzip_bomb_is_refused_without_holding_it() -> None:
    out = subprocess.run([sys.executable, "-c", BOMB_PROBE], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "refused The profile inflates to more than 512 MiB" in out
    grew = int(out.split("grew_mib")[1])
    # The first pass keeps at most 64 MiB before switching to counting; never the cap (512).
    assert grew < 100, out


def test_profile_larger_than_the_first_pass_still_inflates_whole() -> None:
    raw = b"heap" * (20 * MiB)  # 80 MiB: past the one-pass hold, under the cap
    assert inflate(gzip.compress(raw, compresslevel=1)) == raw


def test_cap_applies_to_every_member_of_a_multi_member_gzip() -> None:
    member = gzip.compress(bytes(3 * MiB))
    with pytest.raises(ProfileError, match="inflates to more than"):
        inflate(member * 4, Limits(max_decompressed=10 * MiB))
    assert len(inflate(member * 3, Limits(max_decompressed=10 * MiB))) == 9 * MiB
