"""Profiles on Slack: `respond: always` answers plain channel messages there; `never` and deny-lists stay silent."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_api import app_mention, channel_message
from tests.slack.conftest import StartSlack

PROFILES = """
profiles:
  - name: open
    match: {platform: slack, team: T1, channel: "C1"}
    respond: always
    deny: [U9]
  - name: muted
    match: {channel: "C3"}
    respond: never
"""


async def test_respond_always_answers_a_top_level_message_without_a_mention_in_that_channel_only(
    start_slack: StartSlack, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES)
    rig = await start_slack(profiles_file=path)
    await rig.deliver(channel_message("nobody mentioned you", channel="C2"))
    assert (await rig.outcome()).result == "ignored"  # no profile there: mentions only, as before
    plain = channel_message("just chatting", channel="C1")
    await rig.deliver(plain)
    assert (await rig.outcome()).result == "answered"
    assert rig.reply_texts("C1", plain["ts"]) == ["echo: just chatting"]
    assert [m["content"] for m in fake_openai.requests[-1].messages if m["role"] == "user"] == ["just chatting"]


async def test_a_deny_listed_user_and_a_respond_never_channel_get_no_reply(
    start_slack: StartSlack, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES)
    rig = await start_slack(profiles_file=path)
    denied, muted, hello = (
        app_mention("let me in", user="U9", channel="C1"), app_mention("anyone?", channel="C3"),
        app_mention("hello", channel="C1"),
    )  # fmt: skip
    await rig.deliver(denied)
    assert (await rig.outcome()).result == "ignored"
    await rig.deliver(muted)
    assert (await rig.outcome()).result == "ignored"
    await rig.deliver(hello)
    assert (await rig.outcome()).result == "answered"
    assert rig.reply_texts("C1", hello["ts"]) == ["echo: hello"]
    assert rig.reply_texts("C1", denied["ts"]) == [] and rig.reply_texts("C3", muted["ts"]) == []
    assert len(fake_openai.requests) == 1
    assert len(rig.slack.calls_to("reactions.add")) == 1  # the working indicator on the answered one only


async def test_a_channel_name_glob_matches_on_slack_through_one_remembered_lookup(
    start_slack: StartSlack, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles:\n  - name: eng\n    match: {channel: '#eng-*'}\n    system_prompt: Engineering.\n")
    rig = await start_slack(profiles_file=path)
    rig.slack.set_channel_name("C7", "eng-backend")
    for text in ("first", "second"):
        await rig.deliver(app_mention(text, channel="C7"))
        assert (await rig.outcome()).result == "answered"
        assert fake_openai.requests[-1].messages[0] == {"role": "system", "content": "Engineering."}
    for _ in range(2):  # channel_not_found: no name, matched by its ID only, and not asked again at once
        await rig.deliver(app_mention("elsewhere", channel="C8"))
        assert (await rig.outcome()).result == "answered"
        assert fake_openai.requests[-1].messages[0]["content"] != "Engineering."
    asked = [call.args["channel"] for call in rig.slack.calls_to("conversations.info")]
    assert asked == ["C7", "C8"]  # each once, remembered for the next message
