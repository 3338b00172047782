"""Errors a user or operator can act on. The CLI prints their message in one line, no traceback.

The CLI's exit code says whose move it is: 2 for a :class:`UsageError` (the command line itself is
wrong: fix the arguments and run again), 1 for every other failure at run time (a file missing, a
node unreachable, a key that does not open).
"""


class Mesh112Error(Exception):
    """Base of every error whose message is meant for a person."""


class UsageError(Mesh112Error):
    """The command line is wrong (a bad argument value or combination); exit code 2, like argparse."""


class ConfigError(Mesh112Error):
    """A node configuration file is missing, malformed or inconsistent."""
