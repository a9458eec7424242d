"""Maintenance assistant: answers from live fleet state and the manuals, citing its sources."""

from pitstop.assistant.assistant import Answer, Assistant
from pitstop.assistant.knowledge import KnowledgeBase, Section

__all__ = ["Answer", "Assistant", "KnowledgeBase", "Section"]
