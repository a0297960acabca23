"""Configuration: one settings object built from the environment at start-up."""

from config.settings import Settings

__all__ = ["Settings"]
