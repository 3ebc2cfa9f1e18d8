"""MCP servers through the real `mcp` SDK: a real test server over stdio and streamable HTTP, annotations and
requireApproval, name collisions, a server that dies and comes back, servers that fail or are misconfigured."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError
from core.llm import OpenAIChatModel
from core.logs import configure_logging
from core.messages import ToolCall
from core.tools import PythonTools, Toolbox, ToolRunner, ToolUnavailableError, open_toolbox
from core.tools.mcp_config import McpServerConfig, load_mcp_config
from core.tools.runner import NO_APPROVALS
from core.turns import IncomingMessage
from tests.conftest import make_settings, openai_client
from tests.fakes.openai_server import FakeOpenAI, Reply, ToolCalls
from tests.support.delivery import start_runtime, stop_runtime
from tests.support.mcp import HttpMcpServer, kill_pid_file, stdio_entry, write_config

SECRET = "s3cret-header-value-7781"
ToolboxFactory = Callable[[dict[str, Any]], Awaitable[Toolbox]]


@pytest.fixture
async def toolbox_of(tmp_path: Path) -> AsyncIterator[ToolboxFactory]:
    opened: list[Toolbox] = []

    async def make(servers: dict[str, Any], **overrides: Any) -> Toolbox:
        config = write_config(tmp_path / f"mcp{len(opened)}.json", servers)
        toolbox = await open_toolbox(make_settings(mcp_config=config, **overrides))
        opened.append(toolbox)
        return toolbox

    yield make
    for toolbox in opened:
        await toolbox.aclose()


@pytest.fixture
async def http_server() -> AsyncIterator[HttpMcpServer]:
    server = HttpMcpServer()
    await server.start()
    yield server
    await server.kill()


async def test_a_stdio_server_lists_its_tools_with_approval_from_annotations(toolbox_of: ToolboxFactory) -> None:
    toolbox = await toolbox_of({"orders": stdio_entry(env={"MCP_TEST_SECRET": SECRET})})
    specs = toolbox.specs()
    assert {"lookup_order", "delete_order", "add", "fail", "hang", "big", "whoami"} <= set(specs)
    assert {name: spec.needs_approval for name, spec in specs.items()}["delete_order"] is True
    assert not any(spec.needs_approval for name, spec in specs.items() if name != "delete_order")
    assert specs["lookup_order"].title == "Looking up the order" and specs["lookup_order"].server == "orders"
    assert specs["add"].to_openai()["function"]["parameters"]["required"] == ["a", "b"]
    lookup = await specs["lookup_order"].source.call("lookup_order", {"order_id": "42"})
    assert lookup.text == "order 42: 2 books, shipped" and not lookup.is_error
    assert (await specs["whoami"].source.call("whoami", {})).text == SECRET  # env reaches the server
    failed = await specs["fail"].source.call("fail", {})
    assert failed.is_error


async def test_a_streamable_http_server_serves_its_tools(
    toolbox_of: ToolboxFactory, http_server: HttpMcpServer
) -> None:
    toolbox = await toolbox_of({"remote": {"url": http_server.url, "headers": {"Authorization": f"Bearer {SECRET}"}}})
    specs = toolbox.specs()
    assert specs["delete_order"].needs_approval and specs["lookup_order"].server == "remote"
    assert (await specs["add"].source.call("add", {"a": 2, "b": 40})).text == "42"


@pytest.mark.parametrize(
    "rule,expected",
    [(None, {"delete_order"}), (True, {"delete_order", "lookup_order", "add"}), (False, set()),
     (["add"], {"delete_order", "add"})],
)  # fmt: skip
def test_require_approval_in_the_server_entry(rule: Any, expected: set[str]) -> None:
    config = McpServerConfig(name="s", command="x", requireApproval=rule)  # type: ignore[call-arg]
    destructive = {"delete_order": True, "lookup_order": False, "add": False}
    assert {name for name, hint in destructive.items() if config.needs_approval(name, destructive=hint)} == expected


async def test_require_approval_reaches_the_listed_tools(toolbox_of: ToolboxFactory) -> None:
    toolbox = await toolbox_of({"orders": stdio_entry(only="add,lookup_order", requireApproval=["add"])})
    assert {name: spec.needs_approval for name, spec in toolbox.specs().items()} == {
        "lookup_order": False, "add": True,
    }  # fmt: skip


async def test_a_name_two_sources_share_is_prefixed_with_each_sources_name(
    toolbox_of: ToolboxFactory, tmp_path: Path
) -> None:
    toolbox = await toolbox_of({
        "shop.eu": stdio_entry(only="lookup_order,add"),
        "shop_us": stdio_entry(only="lookup_order,big"),
    })  # fmt: skip

    def add(a: int, b: int) -> int:
        """Python's add."""
        return a + b

    both = Toolbox([PythonTools({"add": add})], servers=toolbox.servers)
    assert sorted(both.specs()) == ["big", "python_add", "shop_eu_add", "shop_eu_lookup_order", "shop_us_lookup_order"]
    assert both.specs()["shop_us_lookup_order"].server == "shop_us"


async def test_a_stdio_server_that_dies_is_restarted_and_its_tools_come_back(
    toolbox_of: ToolboxFactory, tmp_path: Path
) -> None:
    pid_file = tmp_path / "orders.pid"
    toolbox = await toolbox_of({"orders": stdio_entry(pid_file=pid_file, only="lookup_order")})
    (server,) = toolbox.servers
    source = toolbox.specs()["lookup_order"].source
    kill_pid_file(pid_file)
    with pytest.raises(ToolUnavailableError):  # the call sees the server go, or finds it down already
        await source.call("lookup_order", {"order_id": "1"})
    await server.wait_up(connects=2)
    assert (await source.call("lookup_order", {"order_id": "1"})).text.startswith("order 1")
    assert "lookup_order" in toolbox.specs()


async def test_an_http_server_that_dies_is_reconnected_when_it_is_back(
    toolbox_of: ToolboxFactory, http_server: HttpMcpServer
) -> None:
    toolbox = await toolbox_of({"remote": {"url": http_server.url}})
    (server,) = toolbox.servers
    await http_server.kill()
    with pytest.raises(ToolUnavailableError):
        await server.call("add", {"a": 1, "b": 1})
    await http_server.start()  # same port
    await server.wait_up(connects=2)
    assert (await server.call("add", {"a": 1, "b": 1})).text == "2"


async def test_failing_and_misconfigured_servers_are_logged_by_name_and_the_rest_serve(
    toolbox_of: ToolboxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    servers = {
        "good": stdio_entry(only="add"),
        "missing": {"command": "/nonexistent/mcp-server", "env": {"TOKEN": SECRET}},
        "exits": {"command": sys.executable, "args": ["-c", "raise SystemExit(3)"]},
        "shapeless": {"args": ["x"], "headers": {"Authorization": SECRET}},
        "badurl": {"url": "ftp://example.invalid/mcp"},
        "silent": {"command": sys.executable, "args": ["-c", "import time; time.sleep(60)"]},  # never answers
    }
    with caplog.at_level(logging.INFO):
        # "good" is a Python process importing the SDK: seconds on a loaded machine; "silent" waits it all out.
        toolbox = await toolbox_of(servers, mcp_connect_timeout_seconds=10)
    assert sorted(toolbox.specs()) == ["add"]
    status = {s.name: (s.ok, s.detail) for s in toolbox.status()}
    assert status["good"][0] and not status["missing"][0] and not status["exits"][0]
    assert status["silent"] == (False, "down: no answer in time")
    assert "misconfigured" in status["shapeless"][1] and "http://" in status["badurl"][1]
    for name in ("missing", "exits", "shapeless", "badurl", "silent"):
        assert f"MCP server {name} " in caplog.text
    assert SECRET not in caplog.text


async def test_an_mcp_call_that_hangs_times_out_and_the_server_goes_on(toolbox_of: ToolboxFactory) -> None:
    toolbox = await toolbox_of({"orders": stdio_entry(only="hang,add")})
    runner = ToolRunner(toolbox, timeout_seconds=0.5)
    calls = [ToolCall(id="c1", name="hang", arguments="{}"), ToolCall(id="c2", name="add", arguments='{"a":1,"b":2}')]
    results = await runner.run(calls, toolbox.specs())
    assert [m.text for m in results] == ["Error: the tool did not finish within 0.5 seconds.", "3"]
    assert (await runner.run(calls[1:], toolbox.specs()))[0].text == "3"
    assert toolbox.servers[0].connects == 1  # no restart was needed


def test_an_unreadable_or_shapeless_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_mcp_config(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_mcp_config(tmp_path / "bad.json")
    (tmp_path / "flat.json").write_text(json.dumps({"servers": {}}))
    with pytest.raises(ConfigError, match="mcpServers"):
        load_mcp_config(tmp_path / "flat.json")


def test_secrets_of_the_config_are_hidden_in_its_repr() -> None:
    config = McpServerConfig(name="s", url=f"https://u:{SECRET}@h/mcp?key={SECRET}", headers={"A": SECRET})  # type: ignore[arg-type]
    assert SECRET not in repr(config) and SECRET not in config.describe()


async def test_a_turn_calls_an_mcp_tool_and_a_destructive_one_waits_for_an_approval(
    toolbox_of: ToolboxFactory, fake_openai: FakeOpenAI, redis_url: str, key_prefix: str
) -> None:
    toolbox = await toolbox_of({"orders": stdio_entry(only="lookup_order,delete_order")})
    settings = make_settings(redis_url=redis_url, key_prefix=key_prefix)
    model = OpenAIChatModel("m", async_client=openai_client(fake_openai))
    runtime = await start_runtime(settings, model, tools=toolbox)
    try:
        fake_openai.script(
            ToolCalls(("lookup_order", {"order_id": "7"}), ("delete_order", {"order_id": "7"})), Reply("Found it.")
        )
        incoming = IncomingMessage(platform="test", event_id="E1", user_id="U1", channel_id="C1", text="order 7?")
        assert await runtime.ask(incoming) == "Found it."
        results = [m["content"] for m in fake_openai.requests[-1].messages if m["role"] == "tool"]
        assert results == ["order 7: 2 books, shipped", NO_APPROVALS]
    finally:
        await stop_runtime(runtime)


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """The process's logging as `chat-gateway run` sets it with LOG_LEVEL=DEBUG, into a buffer; restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in ("httpx", "httpx2", "mcp")})
    buffer = io.StringIO()
    configure_logging("DEBUG", "text", buffer)
    yield buffer
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


async def test_config_secrets_never_reach_the_log_even_at_debug(
    toolbox_of: ToolboxFactory, http_server: HttpMcpServer, debug_log: io.StringIO
) -> None:
    servers = {
        "local": stdio_entry(only="lookup_order", env={"MCP_TEST_SECRET": f"{SECRET}-env"}),
        "remote": {"url": f"{http_server.url}?key={SECRET}-q", "headers": {"Authorization": f"Bearer {SECRET}-h"}},
        "broken": {"command": "/nonexistent/x", "args": [f"--token={SECRET}-arg"], "env": {"T": f"{SECRET}-env2"}},
    }
    toolbox = await toolbox_of(servers)
    specs = toolbox.specs()
    calls = [ToolCall(id=f"c{i}", name=name, arguments='{"order_id": "1"}')
             for i, name in enumerate(specs) if name.endswith("lookup_order")]  # fmt: skip
    results = await ToolRunner(toolbox).run(calls, specs)
    assert [m.text for m in results] == ["order 1: 2 books, shipped"] * 2
    await toolbox.aclose()
    text = debug_log.getvalue()
    assert "tool local_lookup_order result: order 1" in text and "MCP server broken" in text  # DEBUG is on
    assert SECRET not in text
