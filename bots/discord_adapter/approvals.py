"""Approval prompts on Discord: a message with Approve and Deny buttons, persistent across restarts.

Each button is an `ApprovalButton`, a `discord.ui.DynamicItem` whose custom_id is `core.approvals.custom_id`
(`cg-approval:<decision>:<approval id>`): the client registers the class at start-up
(`client.add_dynamic_items`), so a click on any prompt, posted by this process or another, before or after a
restart, reaches `ApprovalClicks.on_click` without any view kept in memory (the prompt's view has
timeout=None). A decision answers the interaction by editing the prompt (UPDATE_MESSAGE: the outcome, who
decided, no buttons); a click that changed nothing gets an ephemeral note.
"""

from __future__ import annotations

__all__ = ["ApprovalButton", "ApprovalClicks", "approval_view", "closed_content", "prompt_content"]

import logging
import re
import time
from typing import Any, Protocol, cast

import discord

from core.approvals import APPROVE, DENY, Approvals, Decision, click_note, custom_id, outcome_text
from core.commands import describe_duration
from core.errors import GatewayError
from core.store.approvals import ApprovalRecord

log = logging.getLogger(__name__)

PLATFORM = "discord"
NOT_RECORDED = "I could not record your click (my memory is unreachable). Please click again in a moment."
_ZWSP = "\u200b"
_ERRORS = (discord.HTTPException, OSError, TimeoutError)


def _plain(text: str) -> str:
    """Text that pings nobody and breaks no formatting (allowed_mentions is none anyway)."""
    return text.replace("@", f"@{_ZWSP}").replace("`", "'")


def _summary(record: ApprovalRecord) -> str:
    return (
        f"🔒 **Approval needed**: I want to run **{_plain(record.title)}** (`{record.tool}` on `{record.server}`) "
        f"with:\n```json\n{record.arguments}\n```"
    )


def prompt_content(record: ApprovalRecord) -> str:
    left = describe_duration(max(int(record.expires_at - time.time()), 1))
    return f"{_summary(record)}\nOnly the person who asked, or an approver, can decide; it expires in {left}."


def closed_content(record: ApprovalRecord) -> str:
    return f"{_summary(record)}\n{outcome_text(record)}"


class ClickHandler(Protocol):
    async def on_approval(self, interaction: discord.Interaction, decision: Decision, approval_id: str) -> None: ...


class ApprovalButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"cg-approval:(?P<decision>approve|deny):(?P<approval_id>[0-9a-zA-Z]+)",
):
    """One button of a prompt; rebuilt from its custom_id for every click (no state in memory)."""

    def __init__(self, decision: Decision, approval_id: str) -> None:
        approve = decision == APPROVE
        super().__init__(
            discord.ui.Button(
                label="Approve" if approve else "Deny",
                style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
                custom_id=custom_id(decision, approval_id),
            )
        )
        self.decision: Decision = decision
        self.approval_id = approval_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ApprovalButton:
        decision: Decision = APPROVE if match["decision"] == APPROVE else DENY
        return cls(decision, match["approval_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        handler = getattr(interaction.client, "approval_clicks", None)
        if handler is None:
            log.warning("discord approval click with no handler", extra={"platform": PLATFORM})
            return
        await cast(ClickHandler, handler).on_approval(interaction, self.decision, self.approval_id)


def approval_view(record: ApprovalRecord) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ApprovalButton(APPROVE, record.approval_id))
    view.add_item(ApprovalButton(DENY, record.approval_id))
    return view


class ApprovalClicks:
    """Applies clicks on `approvals` (the client's `approval_clicks`)."""

    def __init__(self, approvals: Approvals) -> None:
        self._approvals = approvals

    async def on_approval(self, interaction: discord.Interaction, decision: Decision, approval_id: str) -> None:
        """Decide, then answer the interaction once: the edited prompt, or an ephemeral note. Never raises."""
        user = str(interaction.user.id)
        try:
            decided = await self._approvals.decide(PLATFORM, approval_id, decision, user)
        except GatewayError as exc:
            log.warning("discord approval click not recorded: %s", exc, extra={"platform": PLATFORM})
            await self._note(interaction, NOT_RECORDED)
            return
        record = decided.record
        try:
            if decided.outcome == "decided" and record is not None:
                await interaction.response.edit_message(content=closed_content(record), view=None)
                return
            await interaction.response.send_message(click_note(decided), ephemeral=True)
        except _ERRORS as exc:  # a replayed interaction is refused here: it decided nothing anyway
            log.info("discord approval click not answered: %s", type(exc).__name__, extra={"platform": PLATFORM})
            return
        if record is not None and record.state != "pending" and interaction.message is not None:
            try:  # a late click on a prompt nobody closed (its turn's process died): close it now
                await interaction.message.edit(content=closed_content(record), view=None)
            except _ERRORS as exc:
                log.info("discord approval prompt not closed: %s", type(exc).__name__, extra={"platform": PLATFORM})

    async def _note(self, interaction: discord.Interaction, text: str) -> None:
        try:
            await interaction.response.send_message(text, ephemeral=True)
        except _ERRORS as exc:
            log.info("discord approval note not sent: %s", type(exc).__name__, extra={"platform": PLATFORM})
