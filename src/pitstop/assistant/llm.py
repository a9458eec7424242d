"""The optional LLM: any OpenAI-compatible chat endpoint with tool calling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pitstop.assistant.assistant import Turn
    from pitstop.assistant.tools import Toolbox, ToolResult
    from pitstop.config import Settings


class LlmAnswerer:
    """Phrases answers from the assistant's tools through an LLM (configured by settings)."""

    def __init__(self, url: str, model: str, key: str | None, timeout_s: float) -> None:
        self.url, self.model, self.key, self.timeout_s = url, model, key, timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmAnswerer | None:
        if not settings.assistant_llm_url:
            return None
        key = settings.assistant_llm_key.get_secret_value() if settings.assistant_llm_key else None
        return cls(
            settings.assistant_llm_url, settings.assistant_llm_model, key, settings.assistant_llm_timeout_s
        )

    def answer(self, turn: Turn, tools: Toolbox) -> tuple[str, list[ToolResult]] | None:
        raise NotImplementedError(f"LLM path not built yet ({self.url}, {self.model}): {turn!r} {tools!r}")


__all__: list[Any] = ["LlmAnswerer"]
