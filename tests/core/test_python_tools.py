"""TOOLS_MODULE: which functions become tools, their schema and description, and how they are called."""

from __future__ import annotations

import logging

import pytest

from core.errors import ConfigError
from core.tools import PythonTools, ToolUnavailableError, open_toolbox
from tests.conftest import make_settings


@pytest.fixture
def tools() -> PythonTools:
    return PythonTools.from_module("tests.fakes.python_tools")


def test_public_annotated_functions_of_the_module_are_the_tools(tools: PythonTools) -> None:
    assert sorted(t.name for t in tools.tools()) == ["add", "broken", "weather", "wipe"]


def test_a_function_without_annotations_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        PythonTools.from_module("tests.fakes.python_tools")
    assert "untyped skipped: parameter x has no type annotation" in caplog.text


def test_schema_from_the_signature_and_description_from_the_docstring(tools: PythonTools) -> None:
    weather = next(t for t in tools.tools() if t.name == "weather")
    assert weather.description == "Today's weather in a city."
    assert weather.parameters["required"] == ["city"]
    assert weather.parameters["properties"]["city"]["description"] == "City name"
    assert weather.parameters["properties"]["unit"]["enum"] == ["C", "F"]
    assert weather.parameters["type"] == "object"


def test_requires_approval_marks_a_tool(tools: PythonTools) -> None:
    assert {t.name: t.needs_approval for t in tools.tools()} == {
        "weather": False, "add": False, "wipe": True, "broken": False,
    }  # fmt: skip


async def test_sync_and_async_tools_run_with_validated_arguments(tools: PythonTools) -> None:
    assert (await tools.call("weather", {"city": "Oslo", "unit": "F"})).text == "Oslo: 21 F, sunny"
    assert (await tools.call("add", {"a": "2", "b": 3})).text == "5"  # lax mode: "2" is an int, as pydantic says
    refused = await tools.call("add", {"a": "two", "b": 3})
    assert refused.is_error and "a: Input should be a valid integer" in refused.text


async def test_a_tool_that_raises_raises_to_the_runner(tools: PythonTools) -> None:
    with pytest.raises(RuntimeError, match="kaboom"):
        await tools.call("broken", {})
    with pytest.raises(ToolUnavailableError):
        await tools.call("nothing", {})


async def test_a_module_that_cannot_be_imported_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"TOOLS_MODULE=tests\.fakes\.no_such_module cannot be imported"):
        await open_toolbox(make_settings(tools_module="tests.fakes.no_such_module"))


async def test_the_toolbox_of_tools_module_offers_them_to_the_model() -> None:
    toolbox = await open_toolbox(make_settings(tools_module="tests.fakes.python_tools"))
    specs = toolbox.specs()
    assert sorted(specs) == ["add", "broken", "weather", "wipe"]
    assert specs["add"].to_openai()["function"]["description"] == "Add two integers."
    await toolbox.aclose()
