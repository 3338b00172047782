"""Crypto errors, each with a message an operator can act on."""


class CryptoError(Exception):
    """Base of every error raised by ``crypto``."""


class DecodeError(CryptoError):
    """Bytes (from the network or disk) that are not a valid certificate, list or key message."""


class KeyFileError(CryptoError):
    """A key file is missing, unsafe (readable by others), corrupt, or needs another passphrase."""


class CertificateError(CryptoError):
    """A certificate is not signed by this deployment's authority or does not match its holder."""


class ExpiredError(CertificateError):
    """A certificate (or a record) is past its expiry time."""


class RevokedError(CertificateError):
    """The node was revoked by the deployment authority."""


class EnrolmentError(CryptoError):
    """The authority refuses to enrol a node (e.g. its short id collides with an enrolled node)."""


class SealError(CryptoError):
    """A sealed message cannot be opened: tampered, wrong recipient, wrong sender or unknown key."""


class StaleEpochError(SealError):
    """A group seal under an epoch the group has rotated away from (past the grace period)."""


class ReplayError(CryptoError):
    """A message id was already accepted, or the message is outside its lifetime."""
