"""TOOLS_MODULE: a Python module's public, annotated functions (sync or async) as tools.

A function's JSON schema comes from its signature through pydantic, its description from its
docstring; the model's arguments are validated against the signature before it runs. Sync functions
run in a worker thread so a slow one never blocks the event loop. `@requires_approval` marks a
function a person must approve before each call.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, TypeVar

import pydantic_core
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError, validate_call

from core.errors import ConfigError
from core.tools.base import SourceTool, ToolOutput, ToolUnavailableError

__all__ = ["PythonTools", "requires_approval"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_APPROVAL_FLAG = "__chat_gateway_requires_approval__"


def requires_approval(function: F) -> F:
    """Mark a tool function as one a person must approve before each call."""
    setattr(function, _APPROVAL_FLAG, True)
    return function


class PythonTools:
    """The tools of one module; `name` is what `tools list` shows as their server."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]], *, module: str = "tools") -> None:
        self.module = module
        self._tools: dict[str, SourceTool] = {}
        self._calls: dict[str, tuple[Callable[..., Any], bool]] = {}
        for name, function in functions.items():
            described = _describe(name, function)
            if described is not None:
                self._tools[name] = described
                self._calls[name] = (validate_call(function), inspect.iscoroutinefunction(function))

    @property
    def name(self) -> str:
        return "python"

    @classmethod
    def from_module(cls, module_name: str) -> PythonTools:
        """The tools of `module_name`.

        Raises:
            ConfigError: the module cannot be imported.
        """
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # any error while importing the operator's module is a setting to fix
            raise ConfigError(f"TOOLS_MODULE={module_name} cannot be imported: {type(exc).__name__}: {exc}") from exc
        tools = cls(_public_functions(module), module=module_name)
        if not tools.tools():
            log.warning("TOOLS_MODULE=%s has no public annotated functions: no Python tools", module_name)
        return tools

    def tools(self) -> list[SourceTool]:
        return list(self._tools.values())

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolOutput:
        found = self._calls.get(tool)
        if found is None:
            raise ToolUnavailableError(f"there is no Python tool named {tool!r}")
        call, is_async = found
        try:
            if is_async:
                result = await call(**arguments)
            else:
                result = await asyncio.to_thread(call, **arguments)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            return ToolOutput(f"invalid arguments: {problems}", is_error=True)
        text = result if isinstance(result, str) else pydantic_core.to_json(result, fallback=str).decode()
        return ToolOutput(text)


def _public_functions(module: ModuleType) -> dict[str, Callable[..., Any]]:
    listed = getattr(module, "__all__", None)
    names = list(listed) if listed is not None else [n for n in vars(module) if not n.startswith("_")]
    found: dict[str, Callable[..., Any]] = {}
    for name in names:
        value = getattr(module, name, None)
        if not inspect.isfunction(value):
            continue
        if listed is None and value.__module__ != module.__name__:
            continue  # imported helpers are not this module's tools unless __all__ says so
        found[name] = value
    return found


def _describe(name: str, function: Callable[..., Any]) -> SourceTool | None:
    """The tool for `function`, or None (logged) when its signature cannot make a schema."""
    signature = inspect.signature(function)
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            log.warning("Python tool %s skipped: *args and **kwargs have no schema", name)
            return None
        if parameter.annotation is parameter.empty:
            log.warning("Python tool %s skipped: parameter %s has no type annotation", name, parameter.name)
            return None
    try:
        schema = TypeAdapter(function).json_schema()  # type: ignore[arg-type]  # pydantic reads a callable's signature
    except (PydanticSchemaGenerationError, TypeError, NameError) as exc:
        log.warning("Python tool %s skipped: no JSON schema for its signature (%s)", name, exc)
        return None
    schema.setdefault("properties", {})
    return SourceTool(
        name=name,
        description=inspect.getdoc(function) or "",
        parameters=schema,
        needs_approval=bool(getattr(function, _APPROVAL_FLAG, False)),
    )
