"""One typed settings table: file + environment, validated at start with fix-it messages."""

from pitstop.config.settings import (
    Settings,
    canary_steps,
    describe_settings,
    load_settings,
    settings_markdown,
)

__all__ = ["Settings", "canary_steps", "describe_settings", "load_settings", "settings_markdown"]
