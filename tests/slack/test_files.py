"""Files and images on Slack: `files` of a message event, downloaded at turn time with the bot token."""

from __future__ import annotations

import base64
from typing import Any

from tests.fakes.openai_server import FakeOpenAI, image_parts
from tests.fakes.slack_api import FileDownload, app_mention, im_message
from tests.slack.conftest import Mode, SlackRig, StartSlack
from tests.support.files import pdf_with_text, png_bytes


def file_share(rig: SlackRig, text: str, *files: dict[str, Any]) -> dict[str, Any]:
    """A DM with files, as Slack sends it: a `message` of subtype `file_share`."""
    event = im_message(text)
    event.update(subtype="file_share", files=list(files), upload=False)
    return event


async def answer(rig: SlackRig, event: dict[str, Any]) -> str:
    await rig.deliver(event)
    outcome = await rig.outcome()
    assert outcome.result == "answered" and outcome.reply is not None
    channel = event["channel"]
    thread_ts = event.get("thread_ts") or (None if channel.startswith("D") else event["ts"])
    return rig.reply_texts(channel, thread_ts)[-1]


async def test_an_image_alone_reaches_the_model_as_an_image_part_downloaded_with_the_bot_token(
    start_slack: StartSlack, fake_openai: FakeOpenAI, mode: Mode
) -> None:
    rig = await start_slack(mode)
    image = png_bytes()
    shared = rig.slack.add_file("screenshot.png", image, mimetype="image/png")

    reply = await answer(rig, file_share(rig, "", shared))

    assert rig.slack.downloads == [FileDownload(shared["id"], "xoxb-test", served=True)]
    sent = fake_openai.requests[-1].messages[-1]
    assert image_parts(sent) == [f"data:image/png;base64,{base64.b64encode(image).decode()}"]
    assert reply.startswith("echo: [image screenshot.png (image/png,")
    stored = await rig.gateway.backend.store("user_U1_session_T1-D1", "slack").list_messages()
    assert stored[0].metadata["attachments"] == [{"name": "screenshot.png", "type": "image/png", "size": len(image)}]
    assert base64.b64encode(image).decode() not in stored[0].to_json()  # references, never the bytes


async def test_a_text_file_is_inlined_with_its_name_after_the_question(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    log = rig.slack.add_file("app.log", b"ERROR db timeout\nINFO retry ok\n", mimetype="text/plain")
    event = app_mention("why did it fail?")
    event["files"] = [log]

    reply = await answer(rig, event)

    sent = fake_openai.requests[-1].messages[-1]["content"]
    assert sent == "why did it fail?\n\n[file app.log (text/plain, 31 bytes)]\nERROR db timeout\nINFO retry ok\n" \
        "[end of file app.log]"  # fmt: skip
    assert reply == f"echo: {sent}"


async def test_a_pdf_goes_in_as_its_extracted_text(start_slack: StartSlack, fake_openai: FakeOpenAI) -> None:
    rig = await start_slack()
    pdf = rig.slack.add_file(
        "report.pdf", pdf_with_text("Revenue grew 12 percent", "Costs fell"), mimetype="application/pdf"
    )

    await answer(rig, file_share(rig, "summarise", pdf))

    sent = fake_openai.requests[-1].messages[-1]["content"]
    assert "[file report.pdf (application/pdf," in sent
    assert "Revenue grew 12 percent\n\nCosts fell\n[end of file report.pdf]" in sent


async def test_an_oversized_file_is_not_downloaded_and_the_reply_names_it(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack(max_attachment_bytes=1000)
    big = rig.slack.add_file("dump.csv", b"a,b\n" * 1000, mimetype="text/csv")

    reply = await answer(rig, file_share(rig, "look at this", big))

    assert rig.slack.downloads == []  # its declared size was enough to say no
    assert reply.endswith("_(I could not read dump.csv: it is larger than 1 KB, the most I download.)_")
    assert "[file dump.csv (text/csv, 4 KB): not read" in fake_openai.requests[-1].messages[-1]["content"]


async def test_a_file_larger_than_it_declared_is_cut_off_while_downloading(start_slack: StartSlack) -> None:
    rig = await start_slack(max_attachment_bytes=100_000)
    liar = rig.slack.add_file("notes.txt", b"x" * 300_000, mimetype="text/plain", size=10)

    reply = await answer(rig, file_share(rig, "read it", liar))

    assert [d.served for d in rig.slack.downloads] == [True]
    assert "I could not read notes.txt: it is larger than 100 KB" in reply


async def test_a_file_of_unknown_type_alone_gets_a_note_and_no_model_call(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    calls = len(fake_openai.requests)
    doc = rig.slack.add_file("plan.docx", b"PK\x03\x04binary", mimetype="application/vnd.ms-word")

    reply = await answer(rig, file_share(rig, "", doc))

    assert reply == "_(I could not read plan.docx: I can't read this kind of file (application/vnd.ms-word).)_"
    assert len(fake_openai.requests) == calls
    assert await rig.gateway.backend.store("user_U1_session_T1-D1", "slack").list_messages() == []


async def test_a_missing_files_read_scope_is_reported_naming_the_scope(start_slack: StartSlack) -> None:
    rig = await start_slack()
    rig.slack.scopes.discard("files:read")
    image = rig.slack.add_file("chart.png", png_bytes(), mimetype="image/png")

    reply = await answer(rig, file_share(rig, "what does the chart show?", image))

    assert rig.slack.downloads == [FileDownload(image["id"], "xoxb-test", served=False)]
    assert reply.startswith("echo: what does the chart show?")
    assert "I could not read chart.png: Slack sent its sign-in page instead of the file, so this app lacks the " \
        "files:read scope" in reply  # fmt: skip


async def test_an_image_refused_by_a_text_only_model_is_answered_from_the_text(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    fake_openai.vision = False
    image = rig.slack.add_file("photo.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 64, mimetype="image/jpeg")
    before = len(fake_openai.requests)

    reply = await answer(rig, file_share(rig, "is this a cat?", image))

    refused, retried = fake_openai.requests[before:]
    assert image_parts(refused.messages[-1]) and not image_parts(retried.messages[-1])
    assert reply.startswith("echo: is this a cat?")
    assert reply.endswith("_(This model cannot see images, so I answered from the text alone.)_")


async def test_the_bot_token_never_goes_to_a_file_link_outside_slack(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    shared = rig.slack.add_file("x.png", png_bytes(), mimetype="image/png")
    shared["url_private_download"] = f"{fake_openai.url}/files-pri/x.png"  # another host than Slack's
    before = len(fake_openai.requests)

    reply = await answer(rig, file_share(rig, "and this?", shared))

    assert "I could not read x.png: its link does not point at Slack." in reply
    assert [r.path for r in fake_openai.requests[before:]] == ["/v1/chat/completions"]  # nothing fetched there


async def test_a_file_named_without_a_link_is_looked_up_with_files_info(
    start_slack: StartSlack, fake_openai: FakeOpenAI
) -> None:
    rig = await start_slack()
    shared = rig.slack.add_file("notes.md", b"- ship friday", mimetype="text/markdown")

    reply = await answer(rig, file_share(rig, "", rig.slack.unlinked(shared)))

    assert rig.slack.calls_to("files.info")[0].args["file"] == shared["id"]
    assert rig.slack.downloads == [FileDownload(shared["id"], "xoxb-test", served=True)]
    assert "- ship friday" in reply


async def test_files_info_refused_for_the_missing_scope_says_which_scope(start_slack: StartSlack) -> None:
    rig = await start_slack()
    rig.slack.scopes.discard("files:read")
    shared = rig.slack.add_file("notes.md", b"x", mimetype="text/markdown")

    reply = await answer(rig, file_share(rig, "", rig.slack.unlinked(shared)))

    assert reply.startswith(f"_(I could not read {shared['id']}: Slack refused to describe it, so this app lacks")
    assert "files:read scope" in reply and rig.slack.downloads == []
