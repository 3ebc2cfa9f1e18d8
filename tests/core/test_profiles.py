"""PROFILES_FILE: the schema, its one-line errors, matching (order, globs, DM), resolution and its sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.profile_rules import Place, Profiles, resolve
from core.profiles import load_profiles, parse_profiles
from tests.conftest import make_settings

FILE = Path("profiles.yaml")
EXAMPLE = """
defaults:
  temperature: 0.3
  system_prompt: Be kind.
profiles:
  - name: support
    match: {platform: slack, channel: "C123"}
    system_prompt: You are support.
    tools: [search]
    deny: [U9]
  - name: eng-names
    match: {channel: "#eng-*"}
    model: gpt-4o
  - name: dms
    match: {dm: true}
    respond: always
    memory_scope: channel
  - name: later-support
    match: {platform: slack, channel: "C12?"}
    system_prompt: never reached for C123
  - name: guild
    match: {guild: 42}
    allow: [7, "U1"]
"""


def profiles(text: str = EXAMPLE, **settings: object) -> Profiles:
    return Profiles(make_settings(**settings), parse_profiles(text, FILE), path=FILE)


def slack(channel: str = "C123", **kw: object) -> Place:
    return Place(platform="slack", channel=channel, workspace="T1", **kw)  # type: ignore[arg-type]


def test_the_first_matching_profile_wins_over_later_ones() -> None:
    assert profiles().resolve(slack("C123")).profile == "support"
    assert profiles().resolve(slack("C124")).profile == "later-support"  # the glob C12? fits; support does not


def test_a_profile_wins_over_defaults_which_win_over_the_environment() -> None:
    resolved = profiles(openai_model="env-model", rate_limit_per_minute=7).resolve(slack())
    assert resolved.system_prompt == "You are support." and resolved.sources["system_prompt"] == 'profile "support"'
    assert resolved.temperature == 0.3 and resolved.sources["temperature"] == "defaults"
    assert resolved.model == "env-model" and resolved.sources["model"] == "environment (OPENAI_MODEL)"
    assert resolved.rate_limit_per_minute == 7
    assert resolved.tools == frozenset({"search"})


def test_no_file_means_the_environment_everywhere(tmp_path: Path) -> None:
    assert load_profiles(None) is None
    assert load_profiles(tmp_path / "missing.yaml") is None
    resolved = resolve(make_settings(system_prompt="env"), None, slack())
    assert resolved.profile is None and resolved.system_prompt == "env" and resolved.respond == "mention"
    assert resolved.tools is None and resolved.allow is None and resolved.sources["respond"] == "built-in"


def test_channel_globs_match_ids_and_names_case_insensitively_and_leading_hash_is_optional() -> None:
    found = profiles().resolve(Place(platform="discord", channel="555", names=("Eng-Core",)))
    assert found.profile == "eng-names" and found.model == "gpt-4o"
    assert profiles().resolve(Place(platform="discord", channel="555", names=("general",))).profile is None


def test_a_discord_thread_matches_its_parent_channel() -> None:
    text = "profiles:\n  - name: p\n    match: {channel: '100'}\n    model: m\n"
    assert profiles(text).resolve(Place(platform="discord", channel="200", parents=("100",))).profile == "p"


def test_dm_true_matches_only_direct_messages() -> None:
    assert profiles().resolve(slack("D1", is_dm=True)).profile == "dms"
    assert profiles().resolve(slack("C999")).profile is None
    assert profiles().resolve(slack("D1", is_dm=True)).memory_scope == "channel"


def test_team_and_guild_match_their_own_platform_only() -> None:
    text = "profiles:\n  - name: t\n    match: {team: T1}\n    model: m\n"
    assert profiles(text).resolve(slack("C5")).profile == "t"
    assert profiles(text).resolve(Place(platform="discord", channel="C5", workspace="T1")).profile is None
    assert profiles().resolve(Place(platform="discord", channel="1", workspace="42")).profile == "guild"


def test_allow_and_deny_take_user_ids_and_discord_roles() -> None:
    support = profiles().resolve(slack())
    assert not support.permits(slack(user_id="U9")) and support.permits(slack(user_id="U1"))
    guild = profiles().resolve(Place(platform="discord", channel="1", workspace="42"))
    assert guild.permits(Place(platform="discord", channel="1", user_id="U1"))
    assert guild.permits(Place(platform="discord", channel="1", user_id="5", roles=frozenset({"7"})))
    assert not guild.permits(Place(platform="discord", channel="1", user_id="5", roles=frozenset({"8"})))


def test_budget_fields_are_parsed_and_resolved() -> None:
    text = (
        "defaults:\n  daily_token_budget_per_user: 1000\n"
        "profiles:\n  - match: {}\n    daily_token_budget_per_workspace: 5\n"
    )
    resolved = profiles(text).resolve(slack())
    assert (resolved.daily_token_budget_per_user, resolved.daily_token_budget_per_workspace) == (1000, 5)
    assert resolved.sources["daily_token_budget_per_workspace"] == 'profile "profiles[0]"'


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "profiles:\n  - name: support\n    match: {platform: slack, chanel: C1}\n",
            'profiles.yaml: profile "support" (profiles[0]), field match.chanel: unknown key',
        ),
        (
            "profiles:\n  - name: a\n    match: {}\n  - name: b\n    match: {channel: '[abc'}\n",
            "profiles.yaml: profile \"b\" (profiles[1]), field match.channel: bad glob '[abc': '[' is never closed",
        ),
        (
            "profiles:\n  - match: {channel: '[z-a]'}\n",
            "profiles.yaml: profile profiles[0], field match.channel: "
            "bad glob '[z-a]': a [...] range that matches nothing",
        ),
        (
            "profiles:\n  - name: hot\n    temperature: warm\n",
            'profiles.yaml: profile "hot" (profiles[0]), field temperature: Input should be a valid number '
            "(got str 'warm')",
        ),
        (
            "defaults:\n  max_messages: 'ten'\n",
            "profiles.yaml: defaults, field max_messages: Input should be a valid integer (got str 'ten')",
        ),
        ("default:\n  model: x\n", "profiles.yaml: top level, field default: unknown key"),
        (
            "profiles:\n  - name: r\n    respond: sometimes\n",
            'profiles.yaml: profile "r" (profiles[0]), field respond: '
            "Input should be 'mention', 'always' or 'never' (got str 'sometimes')",
        ),
    ],
)
def test_each_kind_of_mistake_is_one_line_naming_file_profile_and_field(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_profiles(text, FILE)
    assert str(caught.value) == line


def test_not_yaml_says_where() -> None:
    with pytest.raises(ConfigError, match=r"^profiles.yaml: not valid YAML at line 2"):
        parse_profiles("profiles: [\n", FILE)


def test_reload_swaps_in_a_good_file_and_keeps_the_old_one_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("profiles:\n  - name: one\n    match: {}\n    model: m1\n")
    live = Profiles.from_settings(make_settings(profiles_file=path))
    before = live.resolve(slack())
    path.write_text("profiles:\n  - name: two\n    match: {}\n    model: m2\n")
    assert live.reload() and live.resolve(slack()).model == "m2"
    assert before.model == "m1"  # what a turn resolved stays as it was
    path.write_text("profiles:\n  - name: three\n    modle: m3\n")
    assert not live.reload() and live.resolve(slack()).profile == "two"
