"""Flame graph images as a person gets them: PNG size, labels, title, and the CLI."""

from __future__ import annotations

import functools
import io
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from bot.analysis.flame import flame, flame_diff
from bot.analysis.top import TopOptions, top
from bot.pprof import Profile, parse_profile
from bot.render.flame import flame_png, flame_svg, picture
from bot.units import format_value

FIXTURES = Path(__file__).parents[1] / "fixtures"
HEAP1, HEAP2 = FIXTURES / "heap_1.pb.gz", FIXTURES / "heap_2.pb.gz"
SVG = "{http://www.w3.org/2000/svg}"


@functools.cache
def load(path: Path) -> Profile:
    return parse_profile(path.read_bytes())


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


@pytest.mark.parametrize("diff", [False, True])
def test_png_decodes_to_the_stated_size_and_fits_slack(diff: bool) -> None:
    layout = (flame_diff(load(HEAP1), load(HEAP2)) if diff else flame(load(HEAP2)))
    pic = picture(layout, "demo")
    image = decode(flame_png(layout, "demo"))
    assert image.format == "PNG"
    assert image.size == (pic.width, pic.height)
    assert pic.width <= 2000 and pic.height <= 2000
    # Not blank: the frames' fills are there.
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20) or []}
    assert len(colours) > 20


def test_title_names_service_type_time_and_total() -> None:
    layout = flame(load(HEAP2), TopOptions(sample_type="alloc_space", focus="main"))
    pic = picture(layout, "payments")
    assert pic.title == "payments: alloc_space flame graph"
    report = top(load(HEAP2), TopOptions(sample_type="alloc_space"))
    assert pic.subtitle.startswith(f"total {format_value(report.total, 'bytes')} · ")
    assert "captured 2026-11-21 22:44:5" in pic.subtitle  # the profile's own time, UTC
    assert "focus=main" in pic.subtitle
    diff = picture(flame_diff(load(HEAP1), load(HEAP2)), "payments")
    assert diff.title == "payments: inuse_space diff flame graph"
    assert diff.subtitle.startswith("now 11.23MB") and "base 7.52MB" in diff.subtitle
    assert "change +3.72MB" in diff.subtitle


def test_wide_frames_read_name_value_and_share_like_top() -> None:
    layout = flame(load(HEAP2))
    svg = ET.fromstring(flame_svg(layout, "heap_2"))
    labels = [t.text for t in svg.iter(f"{SVG}text") if t.text]
    row = next(r for r in top(load(HEAP2)).rows if r.function == "main.cacheBuildEntry")
    # pprof's -top shows cum 5.03MB 44.76% for it; the frame says the same.
    assert "main.cacheBuildEntry 5.03MB (44.76%)" in labels
    assert f"{row.cum_pct:.2f}%" == "44.76%"
    # Narrow frames show a cut name, never text wider than the frame.
    for g in svg.iter(f"{SVG}g"):
        text = g.find(f"{SVG}text")
        if text is not None:
            width = float(g.find(f"{SVG}rect").get("width"))
            assert len(text.text) * 12 * 1233 / 2048 <= width - 3
    legend = [t.text for t in svg.iter(f"{SVG}text")]
    assert "main" in legend and "runtime" in legend
    assert any("folded into “…”" in (t or "") for t in legend)


def heapbot(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=cwd)


def test_cli_top_and_diff_write_png_and_svg(tmp_path: Path) -> None:
    out = heapbot("top", "--profile", str(HEAP2), "--flame", str(tmp_path / "heap.png"), "-n", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Type: inuse_space")  # the table still comes first
    assert f"flame graph written to {tmp_path / 'heap.png'} and {tmp_path / 'heap.svg'}" \
        in out.stderr
    assert decode((tmp_path / "heap.png").read_bytes()).size[0] <= 2000
    svg = ET.fromstring((tmp_path / "heap.svg").read_text())
    assert "heap_2.pb.gz: inuse_space flame graph" in [t.text for t in svg.iter(f"{SVG}text")]

    out = heapbot("diff", "--base", str(HEAP1), "--profile", str(HEAP2), "--type",
                  "alloc_objects", "--flame", str(tmp_path / "grew.svg"))
    assert out.returncode == 0, out.stderr
    svg = ET.fromstring((tmp_path / "grew.svg").read_text())
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "heap_1.pb.gz → heap_2.pb.gz: alloc_objects diff flame graph" in texts
    assert decode((tmp_path / "grew.png").read_bytes()).format == "PNG"


def test_cli_refuses_a_path_it_cannot_write(tmp_path: Path) -> None:
    out = heapbot("top", "--profile", str(HEAP2), "--flame", str(tmp_path / "heap.jpg"))
    assert out.returncode == 2
    assert "--flame writes a PNG and an SVG, not `heap.jpg`" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    out = heapbot("top", "--profile", str(HEAP2), "--flame", str(tmp_path / "no" / "x.png"))
    assert out.returncode == 2
    assert "Cannot write the flame graph to" in out.stderr and "Traceback" not in out.stderr


async def test_drawing_survives_a_killed_drawing_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import workpool
    from bot.render.flame import draw_flame

    monkeypatch.setenv("HEAPBOT_WORKER_PROCESSES", "1")
    # The kill below makes later work use threads for 60 s: not beyond this test (a
    # worker-pool test run after it within the minute found no pool).
    monkeypatch.setattr(workpool, "_broken_until", 0.0)
    layout = flame(load(HEAP2))
    png, svg = await draw_flame(layout, "demo")
    assert decode(png).size == (picture(layout, "demo").width, picture(layout, "demo").height)
    pool = workpool._pool
    assert pool is not None  # it was drawn in a worker process
    for process in list(pool._processes.values()):
        process.kill()
        process.join()
    again, svg_again = await draw_flame(layout, "demo")
    assert decode(again).size == decode(png).size and svg_again == svg
    workpool.shutdown(wait=True)
