"""`chat-gateway tools list` and the tool lines of `chat-gateway check`, as a user runs them."""

from __future__ import annotations

from pathlib import Path

from tests.bots.test_cli import cli
from tests.support.mcp import REPO, stdio_entry, write_config


def tool_env(tmp_path: Path) -> dict[str, str]:
    config = write_config(tmp_path / "mcp.json", {
        "orders": stdio_entry(only="lookup_order,delete_order,add"),
        "missing": {"command": "/nonexistent/mcp-server"},
    })  # fmt: skip
    return {"TOOLS_MODULE": "tests.fakes.python_tools", "MCP_CONFIG": str(config), "PYTHONPATH": str(REPO),
            "MCP_CONNECT_TIMEOUT_SECONDS": "20"}  # fmt: skip


def test_tools_list_prints_every_tool_its_server_and_approval(tmp_path: Path) -> None:
    result = cli(["tools", "list"], tmp_path, env=tool_env(tmp_path))
    rows = {line.split()[0]: line.split()[1:3] for line in result.stdout.splitlines() if not line.startswith("server")}
    assert rows["TOOL"] == ["SERVER", "APPROVAL"]
    assert rows["lookup_order"] == ["orders", "no"] and rows["delete_order"] == ["orders", "yes"]
    assert rows["wipe"] == ["python", "yes"] and rows["weather"] == ["python", "no"]
    assert rows["python_add"] == ["python", "no"] and rows["orders_add"] == ["orders", "no"]  # both had "add"
    assert "server missing: FAILED" in result.stdout and "/nonexistent" not in result.stdout.split("FAILED")[0]
    assert result.returncode == 1  # a configured server offers nothing
    assert "MCP server missing failed to start" in result.stderr


def test_tools_list_without_tools_says_how_to_add_them(tmp_path: Path) -> None:
    result = cli(["tools", "list"], tmp_path)
    assert result.returncode == 0 and "no tools: set TOOLS_MODULE or MCP_CONFIG" in result.stdout


def test_check_covers_the_tool_servers(tmp_path: Path) -> None:
    result = cli(["check"], tmp_path, env=tool_env(tmp_path))
    assert "tools python: ok (4 tools from tests.fakes.python_tools)" in result.stdout
    assert "mcp orders: ok (3 tools (stdio: " in result.stdout
    assert "mcp missing: FAILED (down: " in result.stdout
    assert result.returncode == 1


def test_a_tools_module_that_cannot_be_imported_stops_run_with_one_line(tmp_path: Path) -> None:
    result = cli(["run", "console"], tmp_path, env={"TOOLS_MODULE": "no_such_tools_module"})
    assert result.returncode == 2 and "TOOLS_MODULE=no_such_tools_module cannot be imported" in result.stderr
    assert "Traceback" not in result.stderr
