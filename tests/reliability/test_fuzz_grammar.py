"""The /heap command grammar under hypothesis: only heapbot's own clear errors come out.

``handlers.parse`` must return a command or raise a UsageError for any text;
``handlers.run`` must answer every text with a Reply that is never an internal
error and, once through Slack's edge (the text through
``bot.slack.text.plain_text``, the reply through ``bot.render.blocks``), never
echoes a ping. ``run`` is driven with a real Runtime whose
registry has one service on a closed port and whose store is a real Redis, so
no example waits on a network capture for long.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.capture import Capturer
from bot.errors import HeapbotError, UsageError
from bot.registry import Registry, ServiceConfig
from bot.render.blocks import fallback_text, reply_to_blocks
from bot.reply import Reply
from bot.runtime import Runtime
from bot.slack.text import plain_text
from bot.store import SnapshotStore
from handlers import ALIASES, COMMANDS, Invocation, parse, run
from tests.support.redis import free_port

WORDS = [*COMMANDS, *ALIASES, "payments", "pay", "since", "deploy", "previous", "1h", "--cum",
         "--type", "inuse_space", "--focus", "main\\.", "-n", "10", "<!channel>", "<@U1>",
         '"', "'", "“", "\u202e", "\x00", "\\", "--", "-", "*", "` `", "(", "[", "999999999999"]

command_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join),
    st.tuples(st.sampled_from([*COMMANDS]), st.lists(st.text(max_size=30), max_size=6)).map(
        lambda t: " ".join([t[0], *t[1]])),
)
PINGS = re.compile(r"<!(channel|here|everyone)|<@U")


@settings(max_examples=300, deadline=None)
@given(command_text)
def test_parse_gives_a_command_or_a_usage_error(text: str) -> None:
    try:
        parsed = parse(text)
    except UsageError as err:
        message = err.user_message()
        assert message and len(message) < 1200 and "Traceback" not in message
        return
    assert parsed.command in COMMANDS
    assert all(isinstance(a, str) and len(a) <= 200 for a in parsed.argv)


@pytest.fixture
async def quiet_runtime(redis_url: str) -> AsyncIterator[Runtime]:
    service = ServiceConfig(name="payments", targets=(f"http://127.0.0.1:{free_port()}",),
                            aliases=("pay",), timeout_seconds=1, cooldown_seconds=0)
    runtime = Runtime(registry=Registry(services={"payments": service}),
                      store=SnapshotStore.from_url(redis_url),
                      capturer=Capturer(retries=0))
    yield runtime
    await runtime.close()


async def test_run_answers_every_text_without_internal_errors(quiet_runtime: Runtime) -> None:
    """hypothesis drives a synchronous check; the coroutine runs on the test's loop."""
    seen: list[tuple[str, Reply]] = []

    @settings(max_examples=200, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(command_text.filter(lambda t: not re.search(r"\b(watch|deploy)\b", t)))
    def collect(text: str) -> None:
        seen.append((text, Reply(title="")))

    collect()
    for index, (text, _) in enumerate(seen):
        reply = await run(quiet_runtime, Invocation(text=plain_text(text), user_id="U1",
                                                    channel_id="C1", source="slack"))
        assert isinstance(reply, Reply)
        shown = " ".join([reply.title, reply.summary, *reply.context, *reply.sections])
        assert "internal error" not in shown, (text, shown)
        in_slack = fallback_text(reply) + str(reply_to_blocks(reply))
        assert not PINGS.search(in_slack), (text, in_slack)
        seen[index] = (text, reply)
    assert len(seen) >= 50


def test_usage_errors_are_heapbot_errors_with_hints() -> None:
    with pytest.raises(HeapbotError) as raised:
        parse("tpo payments")
    assert "/heap top" in raised.value.user_message()
