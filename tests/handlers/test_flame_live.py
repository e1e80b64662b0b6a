"""Flame graphs from live captures: /heap top|diff --flame, the button, Slack and the CLI.

The demo Go service is captured over HTTP into a real Redis; the PNG and SVG the
reply carries are checked against the profile stored for the same snapshot
(recomputed with the engine that is checked against `go tool pprof` in
test_flame_layout.py) and against the table the same reply shows.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.analysis.flame import flame
from bot.analysis.top import TopOptions
from bot.runtime import Runtime
from handlers import Invocation, run
from tests.support.runtime import runtime_on, service_registry
from tests.support.slack_standin import LiveSlackBot

pytestmark = pytest.mark.slow
SVG = "{http://www.w3.org/2000/svg}"
CHANNEL = "C0FLAMES"


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str, demo_service: Any) -> AsyncIterator[Runtime]:
    async with runtime_on(service_registry(tmp_path, "demo", [demo_service.url],
                                           cooldown_seconds=0), redis_url) as rt:
        yield rt


def ask(text: str) -> Invocation:
    return Invocation(text=text, user_id="U0TEST", channel_id=CHANNEL, source="slack")


def files(reply: Any) -> dict[str, bytes]:
    return {a.filename.rsplit("-", 1)[-1] if a.filename.endswith(("flame.png", "flame.svg"))
            else a.filename: a.content for a in reply.attachments}


def svg_frames(svg: bytes) -> list[ET.Element]:
    return list(ET.fromstring(svg).iter(f"{SVG}g"))


async def test_top_flame_draws_the_snapshot_the_table_shows(runtime: Runtime) -> None:
    reply = await run(runtime, ask("top demo -n 5 --type alloc_space --flame"))
    assert not reply.error, reply.sections
    got = files(reply)
    assert set(got) == {"flame.png", "flame.svg"}
    png = Image.open(io.BytesIO(got["flame.png"]))
    assert png.format == "PNG" and png.size[0] <= 2000
    snapshot_id = reply.snapshot_id
    assert [a.filename for a in reply.attachments] == [
        f"demo-{snapshot_id}-flame.png", f"demo-{snapshot_id}-flame.svg"]
    # The drawn graph is the stored snapshot's, with the reply's sample type.
    stored = await runtime.open_snapshot("demo", snapshot_id)
    expected = flame(stored.heap, TopOptions(sample_type="alloc_space"))
    frames = svg_frames(got["flame.svg"])
    root = next(g for g in frames if g.get("data-function") == "root")
    assert int(root.get("data-cum")) == expected.rects[0].cum == expected.width
    title = next(t.text for t in ET.fromstring(got["flame.svg"]).iter(f"{SVG}text"))
    assert title == "demo: alloc_space flame graph"
    # Every function the table shows has its pprof totals in the tooltips.
    table = {row["function"]: (row["flat"], row["cum"]) for row in reply.data["rows"]}
    seen = {g.get("data-function"): (int(g.get("data-fn-flat")), int(g.get("data-fn-cum")))
            for g in frames if g.get("data-function") in table}
    assert seen and all(seen[f] == table[f] for f in seen)
    # With the files attached, no button to draw them again.
    assert "Flame graph" not in [a.label for a in reply.actions]


async def test_flame_graph_buttons_on_top_and_diff_draw_the_same_view(runtime: Runtime) -> None:
    # Capture until the focus narrows the graph (leakmap's samples and another site's are
    # both in the heap; they stay, being leaks), so the drawn width tells focused from not.
    for _ in range(100):
        first = await run(runtime, ask("top demo --focus 'main\\.leakmap'"))
        stored = await runtime.open_snapshot("demo", first.snapshot_id)
        focused = flame(stored.heap, TopOptions(focus="main\\.leakmap"))
        if 0 < focused.width < flame(stored.heap).width:
            break
        await asyncio.sleep(0.1)
    assert 0 < focused.width < flame(stored.heap).width
    button = next(a for a in first.actions if a.label == "Flame graph")
    assert button.command == (f"top demo --snapshot {first.snapshot_id} --flame "
                              "--focus 'main\\.leakmap'")
    assert not first.attachments
    drawn = await run(runtime, ask(button.command))
    assert drawn.snapshot_id == first.snapshot_id
    svg = files(drawn)["flame.svg"]
    root = next(g for g in svg_frames(svg) if g.get("data-function") == "root")
    assert int(root.get("data-cum")) == focused.width
    subtitle = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")][1]
    assert "focus=main\\.leakmap" in subtitle

    diff = await run(runtime, ask("diff demo since previous"))
    assert not diff.error, diff.sections
    button = next(a for a in diff.actions if a.label == "Flame graph")
    base_id = diff.data["base_snapshot_id"]
    assert button.command == f"diff demo since {base_id} --flame"
    redrawn = await run(runtime, ask(button.command))
    assert redrawn.data["base_snapshot_id"] == base_id
    got = files(redrawn)
    assert set(got) == {"flame.png", "flame.svg"}
    assert redrawn.attachments[0].filename.startswith(f"demo-{base_id}-")
    texts = [t.text for t in ET.fromstring(got["flame.svg"]).iter(f"{SVG}text")]
    assert texts[0] == "demo: inuse_space diff flame graph"
    assert any(t and t.startswith("flat grew (full colour: +") for t in texts)
    frames = svg_frames(got["flame.svg"])
    assert all(g.get("data-base-cum") is not None for g in frames)


async def test_slash_command_and_button_upload_the_png_into_the_thread(
        live_slack_bot: LiveSlackBot) -> None:
    standin = live_slack_bot.standin
    await live_slack_bot.sender.slash_command("top demo --flame", channel_id=CHANNEL)
    await standin.wait_for(lambda: standin.posts(CHANNEL), timeout=90)
    ts = standin.post_ts()[0]
    uploaded = await standin.wait_for(
        lambda: [f for f in standin.files() if f.thread_ts == ts] or None, timeout=90)
    names = sorted(f.filename for f in uploaded)
    assert names[0].endswith("-flame.png") and names[1].endswith("-flame.svg")
    assert all(f.channel_id == CHANNEL for f in uploaded)
    png = next(f for f in uploaded if f.filename.endswith(".png"))
    assert Image.open(io.BytesIO(png.content)).format == "PNG"

    # The button on a plain /heap top reply: the PNG lands in that reply's thread.
    await live_slack_bot.sender.slash_command("top demo", channel_id=CHANNEL)
    posts = await standin.wait_for(lambda: standin.posts(CHANNEL)[1:] or None, timeout=90)
    second_ts = standin.post_ts()[1]
    button = next(e for b in posts[0]["blocks"] if b["type"] == "actions"
                  for e in b["elements"] if e["text"]["text"] == "Flame graph")
    await live_slack_bot.sender.block_action(value=button["value"], message_ts=second_ts,
                                             channel_id=CHANNEL, action_id=button["action_id"])
    drawn = await standin.wait_for(
        lambda: [f for f in standin.files() if f.thread_ts == second_ts] or None, timeout=90)
    assert any(f.filename.endswith("-flame.png") for f in drawn)


def test_cli_service_mode_writes_the_files_where_asked(tmp_path: Path, redis_url: str,
                                                      demo_service: Any) -> None:
    config = tmp_path / "heapbot.yaml"
    config.write_text(f'services:\n  demo:\n    targets: ["{demo_service.url}"]\n'
                      "    cooldown_seconds: 0\n")
    env = {**os.environ, "HEAPBOT_CONFIG": str(config), "REDIS_URL": redis_url,
           "HEAPBOT_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-m", "bot", "top", "demo", "-n", "3", "--flame",
                          str(tmp_path / "demo.png")], capture_output=True, text=True,
                         env=env, timeout=180, check=False)
    assert out.returncode == 0, out.stderr
    assert "flame graph written to" in out.stderr
    assert Image.open(tmp_path / "demo.png").size[0] <= 2000
    svg = ET.fromstring((tmp_path / "demo.svg").read_text())
    assert next(t.text for t in svg.iter(f"{SVG}text")) == "demo: inuse_space flame graph"
    assert not list((tmp_path / "data" / "files").glob("*flame*"))
