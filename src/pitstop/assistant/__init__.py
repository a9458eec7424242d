"""Maintenance assistant: conversations grounded in live fleet state and the manuals, citing
sources, acting within the user's role after an explicit confirmation."""

from pitstop.assistant.assistant import Assistant, Reply
from pitstop.assistant.conversations import Conversations
from pitstop.assistant.knowledge import KnowledgeBase, Section
from pitstop.assistant.tools import Toolbox, ToolResult

__all__ = ["Assistant", "Conversations", "KnowledgeBase", "Reply", "Section", "ToolResult", "Toolbox"]
