"""Tools the model can call: Python functions (TOOLS_MODULE) and MCP servers (MCP_CONFIG)."""

from core.tools.base import Approver, PendingCall, SourceTool, ToolOutput, ToolSource, ToolSpec, ToolUnavailableError
from core.tools.python_tools import PythonTools, requires_approval
from core.tools.runner import ToolRunner
from core.tools.toolbox import Toolbox, open_toolbox

__all__ = [
    "Approver",
    "PendingCall",
    "PythonTools",
    "SourceTool",
    "ToolOutput",
    "ToolRunner",
    "ToolSource",
    "ToolSpec",
    "ToolUnavailableError",
    "Toolbox",
    "open_toolbox",
    "requires_approval",
]
