"""Replies: split long ones, stream progressively, survive rate limits, never notify a crowd, report failures."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.listeners import NOT_STORED
from bots.slack.text import MAX_PART_CHARS, message_parts
from bots.slack.writer import SlackReply
from core.delivery import FAILURE_NOTICE
from core.errors import ModelError
from tests.fakes.openai_server import FakeOpenAI, Reply, Status
from tests.fakes.slack_api import CHANNEL_NOT_FOUND, Call, FakeSlack, app_mention, channel_message, im_message
from tests.slack.conftest import SlackRig, StartSlack
from tests.support.redis_proc import free_port

CROWD = re.compile(r"<!(channel|here|everyone|subteam)|@(channel|here|everyone)", re.IGNORECASE)
STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")


def long_reply(paragraphs: int = 30) -> str:
    """About 10,000 characters: paragraphs and one fenced code block, in Markdown."""
    text = [f"Paragraph {i}: " + " ".join(f"word{i}-{j}" for j in range(30)) for i in range(paragraphs)]
    code = "```python\n" + "\n".join(f"print('line {i}')" for i in range(120)) + "\n```"
    return "\n\n".join([*text[:10], code, *text[10:]])


def posted_texts(call: Call) -> list[str]:
    """Every piece of text a Web API call would show: text, blocks and streamed chunks."""
    args = call.args
    pieces = [str(args.get("text") or ""), str(args.get("markdown_text") or "")]
    pieces += [str(block.get("text", "")) for block in args.get("blocks") or []]
    return pieces + [str(chunk.get("text", "")) for chunk in args.get("chunks") or []]


def bot_texts(slack: FakeSlack, thread_ts: str) -> list[str]:
    return [m.visible_text for m in slack.thread("C1", thread_ts) if m.bot_id]


async def ask(rig: SlackRig, event: dict[str, Any]) -> list[str]:
    """Deliver one message, wait for its turn, return the bot's messages where the reply went."""
    await rig.deliver(event)
    assert (await rig.outcome()).result == "answered"
    if event.get("channel_type") == "im" and "thread_ts" not in event:
        return rig.reply_texts(event["channel"])
    return rig.reply_texts(event["channel"], event.get("thread_ts") or event["ts"])


@pytest.mark.parametrize("where", ["channel", "dm"])
async def test_a_10000_character_reply_is_split_at_paragraphs_around_code(
    start_slack: StartSlack, fake_openai: FakeOpenAI, where: str
) -> None:
    rig = await start_slack()
    text = long_reply()
    assert 9_000 < len(text) < 11_000
    fake_openai.script(Reply(text))

    texts = await ask(rig, app_mention("essay please") if where == "channel" else im_message("essay please"))

    assert texts == message_parts(text) and len(texts) >= 3
    assert all(len(part) <= MAX_PART_CHARS and part.count("```") % 2 == 0 for part in texts)
    assert "\n\n".join(texts) == text  # split only between paragraphs, nothing lost or repeated
    assert all(call.ok for call in rig.slack.calls if call.method.startswith("chat."))


async def test_msg_too_long_is_handled_by_splitting_smaller(start_slack: StartSlack, fake_openai: FakeOpenAI) -> None:
    rig = await start_slack()
    text = long_reply(paragraphs=16)  # two parts: the first streams, the second is posted
    fake_openai.script(Reply(text))
    rig.slack.fail_next("chat.postMessage", "msg_too_long")
    rig.slack.fail_next("chat.postMessage", "msg_blocks_too_long")

    texts = await ask(rig, app_mention("long one"))

    assert [c.response.get("error") for c in rig.slack.calls_to("chat.postMessage")][:2] == [
        "msg_too_long",
        "msg_blocks_too_long",
    ]
    # Halving may cut the code block: it is closed at the cut and reopened, with its language, after.
    assert len(texts) > 2 and "\n\n".join(texts).replace("\n```\n\n```python\n", "\n") == text
    assert all(part.count("```") % 2 == 0 for part in texts)


@pytest.mark.parametrize("where", ["channel", "dm"])
async def test_mass_mentions_from_model_or_user_never_reach_slack(
    start_slack: StartSlack, fake_openai: FakeOpenAI, where: str
) -> None:
    rig = await start_slack(progress_interval_seconds=0)
    fake_openai.script(
        Reply("Hey <!channel> and <!here|here>, also <!everyone> and <!subteam^S1|@devs> — ping @here @channel now")
    )
    event = app_mention("x") if where == "channel" else im_message("x")
    await ask(rig, event)
    await ask(rig, app_mention("tell @everyone about <!channel>") if where == "channel" else im_message("@everyone"))

    shown = [piece for call in rig.slack.calls for piece in posted_texts(call)]
    assert any("devs" in piece for piece in shown)
    assert [piece for piece in shown if CROWD.search(piece)] == []


PING = re.compile(r"<@[UW]|<!subteam", re.IGNORECASE)


@pytest.mark.parametrize("where", ["channel", "dm"])
async def test_user_and_group_mentions_from_the_model_or_quoted_from_the_user_never_ping(
    start_slack: StartSlack, fake_openai: FakeOpenAI, where: str
) -> None:
    rig = await start_slack(progress_interval_seconds=0)
    fake_openai.script(Reply("Sure, I'll ask <@U999> and <@W42|carol> and <!subteam^S7|@oncall> right away ok"))
    await ask(rig, app_mention("x") if where == "channel" else im_message("x"))
    await ask(rig, app_mention("say hi to <@U2>") if where == "channel" else im_message("say hi to <@U2>"))  # echoed

    shown = [piece for call in rig.slack.calls for piece in posted_texts(call)]
    assert any("carol" in piece for piece in shown) and any("U2" in piece for piece in shown)
    assert [piece for piece in shown if PING.search(piece)] == []


async def test_slack_allow_user_mentions_lets_the_model_mention_a_user(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack(slack_allow_user_mentions=True)
    fake_openai.script(Reply("Ping <@U999>, not <!here>"))
    assert await ask(rig, im_message("x")) == ["Ping <@U999>, not @\u200dhere"]


async def test_channel_reply_streams_natively_and_ends_with_the_exact_text(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack(progress_interval_seconds=0)
    text = "Here is **a streamed** answer, " + " ".join(f"w{i}" for i in range(40)) + " done."
    fake_openai.script(Reply(text))

    texts = await ask(rig, app_mention("stream it"))

    methods = [c.method for c in rig.slack.calls if c.method in (*STREAM_METHODS, "chat.update", "chat.postMessage")]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert methods.count("chat.appendStream") >= 1 and "chat.postMessage" not in methods
    assert texts == [text]


async def test_dm_reply_is_posted_then_edited_and_ends_with_the_exact_text(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack(progress_interval_seconds=0)
    text = " ".join(f"w{i}" for i in range(30))
    fake_openai.script(Reply(text))

    texts = await ask(rig, im_message("edit it"))

    assert len(rig.slack.calls_to("chat.postMessage")) == 1
    assert len(rig.slack.calls_to("chat.update")) >= 1
    assert texts == [text]


@pytest.mark.parametrize(
    ("where", "method", "status"),
    [("channel", "chat.appendStream", 429), ("dm", "chat.update", 429), ("dm", "chat.update", 200)],
)
async def test_ratelimited_progress_pauses_and_the_final_text_is_posted_once(
    start_slack: StartSlack, fake_openai: FakeOpenAI, where: str, method: str, status: int
) -> None:
    rig = await start_slack(progress_interval_seconds=0)
    text = " ".join(f"w{i}" for i in range(20))
    fake_openai.script(Reply(text))
    rig.slack.fail_next(method, "ratelimited", status=status, retry_after=30 if status == 429 else None)

    texts = await ask(rig, app_mention("slow down") if where == "channel" else im_message("slow down"))

    calls = rig.slack.calls_to(method)
    assert calls[0].response.get("error") == "ratelimited"
    # Progress neither waited out the 30 s nor retried; it paused, and the reply still ends exactly.
    assert all(call.ok for call in calls[1:]) and len(calls) <= 2
    assert texts == [text]


async def test_final_reply_is_retried_per_retry_after(start_slack: StartSlack, fake_openai: FakeOpenAI) -> None:
    rig = await start_slack()
    rig.slack.fail_next("chat.postMessage", status=429, retry_after=0)

    texts = await ask(rig, im_message("help"))  # a command: no progress, one post

    assert [c.status for c in rig.slack.calls_to("chat.postMessage")] == [429, 200]
    assert len(texts) == 1 and "reset" in texts[0]


async def test_a_slack_500_on_the_final_reply_is_retried_and_posted_once(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    rig.slack.fail_next("chat.postMessage", status=500)

    texts = await ask(rig, im_message("help"))

    assert [c.status for c in rig.slack.calls_to("chat.postMessage")] == [500, 200]
    assert len(texts) == 1 and "reset" in texts[0]


async def test_stream_that_slack_refuses_falls_back_to_post_and_edit(slack: FakeSlack) -> None:
    thread_ts = slack.add_message("C1", "no streams here").ts
    reply = SlackReply(AsyncWebClient(token="xoxb-test", base_url=slack.api_url), channel="C1", thread_ts=thread_ts,
                       recipient_team_id="T1", recipient_user_id="U1")  # fmt: skip
    slack.fail_next("chat.startStream", "not_allowed")
    await reply.progress("w0 w1 w2 ")  # refused: the reply goes on as a post and its edits
    await reply.progress("w0 w1 w2 w3 w4 ")
    await reply.finish("w0 w1 w2 w3 w4 w5")

    assert len(slack.calls_to("chat.startStream")) == 1 and slack.calls_to("chat.update")
    assert bot_texts(slack, thread_ts) == ["w0 w1 w2 w3 w4 w5"]


async def test_stream_that_cannot_be_stopped_is_rewritten_with_the_final_text(slack: FakeSlack) -> None:
    thread_ts = slack.add_message("C1", "stop trouble").ts
    reply = SlackReply(AsyncWebClient(token="xoxb-test", base_url=slack.api_url), channel="C1", thread_ts=thread_ts,
                       recipient_team_id="T1", recipient_user_id="U1")  # fmt: skip
    await reply.progress("first words and ")
    assert slack.calls_to("chat.startStream")
    slack.fail_next("chat.stopStream", status=429, retry_after=30)
    await reply.finish("first words and then the rest")

    assert bot_texts(slack, thread_ts) == ["first words and then the rest"]
    assert len(slack.calls_to("chat.update")) == 1


async def test_model_error_gives_a_clear_message_in_the_thread(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    fake_openai.script(Status(500))
    mention = app_mention("hello?")
    await rig.deliver(mention)
    outcome = await rig.outcome()
    assert outcome.reply is not None and outcome.reply.kind == "error"
    assert rig.reply_texts("C1", mention["ts"]) == [ModelError.user_message]


async def test_redis_down_leaves_the_event_unacknowledged_and_tells_the_user_once(
    start_slack: StartSlack, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await start_slack("http", redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_seconds=0.5)
    mention = app_mention("anyone home?")
    assert await rig.deliver(mention) == 500  # not stored: Slack must retry
    assert await rig.deliver(mention, retry_num=1) == 500
    assert rig.reply_texts("C1", mention["ts"]) == [NOT_STORED]  # the retry stays quiet

    # A follow-up whose thread cannot be looked up is left alone, with a log line.
    await rig.deliver(channel_message("still there?", thread_ts=mention["ts"]))
    assert (await rig.outcome()).result == "ignored"
    assert any(r.message.startswith("slack thread lookup failed") for r in caplog.records)


async def test_unknown_channel_is_logged_and_the_adapter_keeps_serving(
    start_slack: StartSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rig = await start_slack()
    mention = app_mention("anyone?", channel=CHANNEL_NOT_FOUND)
    await rig.deliver(mention)
    assert (await rig.outcome()).result == "failed"

    [failed] = [r for r in caplog.records if r.message.startswith("reply not posted")]
    assert failed.levelno == logging.ERROR and "channel_not_found" in failed.message
    assert failed.__dict__["message_key"] == f"T1:{CHANNEL_NOT_FOUND}:{mention['ts']}"  # platform: turn_context
    assert await ask(rig, im_message("and now?")) == ["echo: and now?"]


async def test_reply_slack_refuses_raises_and_the_notice_goes_to_the_thread(slack: FakeSlack) -> None:
    thread_ts = slack.add_message("C1", "try").ts
    reply = SlackReply(AsyncWebClient(token="xoxb-test", base_url=slack.api_url), channel="C1", thread_ts=thread_ts,
                       recipient_team_id="T1", recipient_user_id="U1")  # fmt: skip
    await reply.progress("an answer ")
    slack.fail_next("chat.stopStream", "invalid_blocks")
    slack.fail_next("chat.update", "invalid_blocks")
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        await reply.finish("an answer slack will not take")
    await reply.notice(FAILURE_NOTICE)  # what the delivery runner does next (tests/core/test_gateway.py)
    assert bot_texts(slack, thread_ts)[-1] == FAILURE_NOTICE
