"""Errors a user or operator can act on. The CLI prints their message in one line, no traceback."""


class Mesh112Error(Exception):
    """Base of every error whose message is meant for a person."""


class ConfigError(Mesh112Error):
    """A node configuration file is missing, malformed or inconsistent."""
