"""The error hierarchy of the SDK.

Every error a user can cause derives from :class:`LyraError`; the CLI turns these into one clear line and
exit code 2. Messages say what was expected, what was got and, where there is a choice, the valid choices.
"""

from __future__ import annotations


class LyraError(Exception):
    """Base class of every error the SDK raises on purpose."""


class PluginError(LyraError):
    """A plugin could not be found, loaded or registered (unknown name, duplicate name, broken entry point)."""


class ConfigError(LyraError):
    """A configuration is malformed. ``errors`` holds every problem as ``(path, message)``."""

    def __init__(self, errors: list[tuple[str, str]], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(self.errors)} configuration error(s){where}:"]
        lines += [f"  {path or '<root>'}: {msg}" for path, msg in self.errors]
        super().__init__("\n".join(lines))


class MediaError(LyraError):
    """Media could not be read or does not fit (missing, empty, corrupt, too large, wrong format)."""


class PromptError(LyraError):
    """A prompt and its media disagree (a placeholder without media, media without a placeholder, ...)."""


class CheckpointError(LyraError):
    """A saved model or checkpoint is missing, truncated or does not match its configuration."""
