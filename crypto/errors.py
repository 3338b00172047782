"""Crypto errors, each with a message an operator can act on."""


class CryptoError(Exception):
    """Base of every error raised by ``crypto``."""
