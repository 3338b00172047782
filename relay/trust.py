"""Whom this node believes: the deployment authority, the certificates it knows, the revocations.

A relay forwards only bundles whose origin holds a certificate that is signed by the authority,
unexpired and not revoked; the first relay drops anything else, so an outsider on the open LoRa air
can neither inject traffic nor make the mesh carry it. Certificates are preloaded from the roster
or learned later (:meth:`TrustStore.add`); each is checked before it is believed.
"""

from __future__ import annotations

from collections.abc import Iterable

from crypto.certificate import Certificate, RevocationList
from crypto.errors import CertificateError
from crypto.identity import PublicIdentity
from relay.bundle import CompactContext, from_epoch


class UnknownOriginError(CertificateError):
    """A bundle's origin has no certificate here; enrol it or give this node the roster."""


class TrustStore:
    def __init__(
        self,
        authority: PublicIdentity,
        certificates: Iterable[Certificate] = (),
        revocations: RevocationList | None = None,
        *,
        groups: Iterable[str] = (),
    ) -> None:
        self.authority = authority
        self.revocations = revocations
        self.groups = frozenset(groups)  # incident groups known to the deployment (compact codes)
        self._certificates: dict[bytes, Certificate] = {}
        for certificate in certificates:
            self._certificates[certificate.node_id] = certificate

    def add(self, certificate: Certificate, now: float) -> None:
        """Believe ``certificate`` after checking it (``now`` in Mesh112 epoch seconds)."""
        certificate.verify(self.authority, int(from_epoch(now)), self.revocations)
        self._certificates[certificate.node_id] = certificate

    def update_revocations(self, revocations: RevocationList) -> bool:
        """Take a newer signed revocation list; False if it is not newer than the one held."""
        revocations.verify(self.authority)
        if self.revocations is not None and not revocations.is_newer_than(self.revocations):
            return False
        self.revocations = revocations
        return True

    def certificate(self, node_id: bytes) -> Certificate | None:
        return self._certificates.get(node_id)

    def certificates(self) -> list[Certificate]:
        """Every certificate held (each checked when added; revocations are checked on use)."""
        return list(self._certificates.values())

    def check(self, node_id: bytes, now: float) -> PublicIdentity:
        """The public identity of a trusted node, or the CertificateError saying why it is not."""
        certificate = self._certificates.get(node_id)
        if certificate is None:
            raise UnknownOriginError(f"node {node_id.hex()[:8]} has no certificate known to this node")
        certificate.verify(self.authority, int(from_epoch(now)), self.revocations)
        return certificate.public

    def compact_context(self) -> CompactContext:
        """Short ids and name codes for the LoRa encoding: every known node, role and group."""
        names = {role for cert in self._certificates.values() for role in cert.roles} | set(self.groups)
        return CompactContext.from_names(list(self._certificates), sorted(names))
