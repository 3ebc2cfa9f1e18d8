"""Approval prompts on Slack: Block Kit buttons, and bolt's `app.action` for their clicks.

The prompt is a message in the conversation (the reply's thread or DM) with an Approve and a Deny button;
each button's action_id is `core.approvals.custom_id` (`cg-approval:<decision>:<approval id>`), so any
process can apply a click, long after the prompt was posted. The click is acknowledged at once, then
decided (one atomic step in the store): a decision edits the prompt to show the outcome and who decided,
without buttons; a click that changed nothing (someone else's, or a late one) gets an ephemeral note.
"""

from __future__ import annotations

__all__ = ["ApprovalClicks", "closed_blocks", "prompt_blocks", "prompt_text"]

import logging
import re
import time
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.incoming import PLATFORM
from bots.slack.text import neutralise
from core.approvals import (
    APPROVE,
    DENY,
    Approvals,
    Decision,
    click_note,
    custom_id,
    outcome_text,
    parse_custom_id,
)
from core.commands import describe_duration
from core.errors import GatewayError
from core.store.approvals import ApprovalRecord

log = logging.getLogger(__name__)

ACTION_PATTERN = re.compile(r"^cg-approval:")
NOT_RECORDED = "I could not record your click (my memory is unreachable). Please click again in a moment."
_SEND_ERRORS = (SlackApiError, OSError, TimeoutError)


def _summary(record: ApprovalRecord) -> dict[str, Any]:
    title = neutralise(record.title)
    text = (
        f":lock: *Approval needed*: I want to run *{title}* (`{record.tool}` on `{record.server}`) with:\n"
        f"```{record.arguments}```"
    )
    return {"type": "section", "block_id": "approval_summary", "text": {"type": "mrkdwn", "text": text}}


def prompt_text(record: ApprovalRecord) -> str:
    return f"Approval needed: {neutralise(record.title)} ({record.tool})"


def prompt_blocks(record: ApprovalRecord) -> list[dict[str, Any]]:
    def button(label: str, decision: Decision, style: str) -> dict[str, Any]:
        return {
            "type": "button", "text": {"type": "plain_text", "text": label}, "style": style,
            "action_id": custom_id(decision, record.approval_id), "value": record.approval_id,
        }  # fmt: skip

    left = describe_duration(max(int(record.expires_at - time.time()), 1))
    who = f"Only the person who asked, or an approver, can decide; it expires in {left}."
    return [
        _summary(record),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": who}]},
        {"type": "actions", "block_id": "approval", "elements": [button("Approve", APPROVE, "primary"),
                                                                  button("Deny", DENY, "danger")]},
    ]  # fmt: skip


def closed_blocks(record: ApprovalRecord) -> list[dict[str, Any]]:
    return [_summary(record), {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome_text(record)}]}]


class ApprovalClicks:
    """The Approve / Deny buttons of every prompt, on `approvals`."""

    def __init__(self, approvals: Approvals, client: AsyncWebClient) -> None:
        self._approvals = approvals
        self._client = client

    def register(self, app: AsyncApp) -> None:
        app.action(ACTION_PATTERN)(self.on_click)

    async def on_click(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # within Slack's 3 s, before the store is asked; a redelivered click is decided as late
        actions = body.get("actions") or [{}]
        parsed = parse_custom_id(str(actions[0].get("action_id") or ""))
        user = str((body.get("user") or {}).get("id") or "")
        container = body.get("container") or {}
        channel = str(container.get("channel_id") or (body.get("channel") or {}).get("id") or "")
        ts, thread_ts = container.get("message_ts"), container.get("thread_ts")
        if parsed is None or not user or not channel:
            log.info("slack click ignored: not an approval button", extra={"platform": PLATFORM})
            return
        decision, approval_id = parsed
        try:
            decided = await self._approvals.decide(PLATFORM, approval_id, decision, user)
        except GatewayError as exc:
            log.warning("slack approval click not recorded: %s", exc, extra={"platform": PLATFORM})
            await self._ephemeral(channel, user, thread_ts, NOT_RECORDED)
            return
        record = decided.record
        if record is not None and record.state != "pending" and ts and decided.outcome in ("decided", "late"):
            try:  # the late click on a prompt nobody closed (its turn's process died): close it now
                await self._client.chat_update(
                    channel=channel, ts=str(ts), text=f"{prompt_text(record)}: {outcome_text(record)}",
                    blocks=closed_blocks(record),
                )  # fmt: skip
            except _SEND_ERRORS as exc:
                log.warning("slack approval prompt not updated: %s", type(exc).__name__, extra={"platform": PLATFORM})
        if decided.outcome != "decided":
            await self._ephemeral(channel, user, thread_ts, click_note(decided))

    async def _ephemeral(self, channel: str, user: str, thread_ts: Any, text: str) -> None:
        try:
            await self._client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=str(thread_ts) if thread_ts else None
            )
        except _SEND_ERRORS as exc:
            log.warning("slack ephemeral note not sent: %s", type(exc).__name__, extra={"platform": PLATFORM})
