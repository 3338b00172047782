"""Whom this node believes: the deployment authority, the certificates it knows, the revocations.

A relay forwards only bundles whose origin holds a certificate that is signed by the authority,
unexpired and not revoked; the first relay drops anything else, so an outsider on the open LoRa air
can neither inject traffic nor make the mesh carry it. Certificates are preloaded from the roster
or learned later (:meth:`TrustStore.add`); each is checked before it is believed.

A running node also learns the certificate a neighbour proves it holds (the IP link's handshake:
:meth:`TrustStore.learn`), so a device enrolled after the node started is heard without a restart.
Only the authority can issue such certificates, so an outsider cannot teach a node anything; the
count is bounded all the same (:data:`MAX_LEARNED`), so even a misbehaving authority cannot grow it
without limit. Certificates of origins further away are learned the same way, from the neighbour that
carries their bundles (:mod:`relay.core.certs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from crypto.certificate import Certificate, RevocationList
from crypto.errors import CertificateError
from crypto.identity import PublicIdentity
from relay.bundle import SHORT_ID_LEN, CompactContext, from_epoch

MAX_LEARNED = 4096  # certificates learned at run time, beyond the roster read at start


class UnknownOriginError(CertificateError):
    """A bundle's origin has no certificate here; enrol it or give this node the roster."""


class LearnRefusedError(CertificateError):
    """A valid certificate this node will not take at run time; the message says why."""


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
        self._short_ids: dict[bytes, bytes] = {}  # short id -> node id, for the LoRa encoding
        for certificate in certificates:
            self._hold(certificate)
        self._learned: set[bytes] = set()
        self._on_learned: list[Callable[[Certificate], None]] = []
        # compact_context's answer while no certificate is held anew, with the groups it was for
        self._context: tuple[frozenset[str], CompactContext] | None = None

    def copy(self) -> TrustStore:
        """A store that believes what this one does and learns on its own from now on, with no
        callbacks (the simulator gives every node of a field its own from one roster: holding a
        1,000-node roster certificate by certificate for each node took 4 % of a run)."""
        copy = TrustStore(self.authority, (), self.revocations)
        copy.groups = self.groups
        copy._certificates = dict(self._certificates)
        copy._short_ids = dict(self._short_ids)
        copy._learned = set(self._learned)
        copy._context = self._context  # a 1,000-node roster's took 3-4 % of the region run, per node
        return copy

    def add(self, certificate: Certificate, now: float) -> None:
        """Believe ``certificate`` after checking it (``now`` in Mesh112 epoch seconds)."""
        certificate.verify(self.authority, int(from_epoch(now)), self.revocations)
        self._hold(certificate)

    def learn(self, certificate: Certificate, now: float) -> bool:
        """Believe a certificate a neighbour proved it holds, if it is new here (``now`` in Mesh112
        epoch seconds); True when it was, after every :meth:`on_learned` callback ran.

        A certificate already held, or an older one (a lower serial) for a known node, teaches
        nothing. One that is not the authority's, expired or revoked raises its CertificateError;
        one whose short id is another node's, or past :data:`MAX_LEARNED`, LearnRefusedError.
        """
        node_id = certificate.node_id
        known = self._certificates.get(node_id)
        if known is not None and certificate.serial <= known.serial:
            return False
        certificate.verify(self.authority, int(from_epoch(now)), self.revocations)
        if known is None:
            if len(self._learned) >= MAX_LEARNED:
                raise LearnRefusedError(
                    f"certificate of {certificate.name!r} not learned: {MAX_LEARNED} already learned "
                    "since start; restart the node (it then reads them from its roster)"
                )
            short = node_id[:SHORT_ID_LEN]
            if short in self._short_ids:
                raise LearnRefusedError(
                    f"certificate of {certificate.name!r} not learned: its short id {short.hex()} is "
                    "another enrolled node's (the authority should not have issued it)"
                )
            self._learned.add(node_id)
        self._hold(certificate)
        for callback in self._on_learned:
            callback(certificate)
        return True

    def on_learned(self, callback: Callable[[Certificate], None]) -> None:
        """Call ``callback`` with each certificate :meth:`learn` takes (to persist it, to rebuild
        what depends on the roster)."""
        self._on_learned.append(callback)

    def _hold(self, certificate: Certificate) -> None:
        self._certificates[certificate.node_id] = certificate
        self._short_ids[certificate.node_id[:SHORT_ID_LEN]] = certificate.node_id
        self._context = None

    def update_revocations(self, revocations: RevocationList) -> bool:
        """Take a newer signed revocation list; False if it is not newer than the one held."""
        revocations.verify(self.authority)
        if self.revocations is not None and not revocations.is_newer_than(self.revocations):
            return False
        self.revocations = revocations
        return True

    def certificate(self, node_id: bytes) -> Certificate | None:
        return self._certificates.get(node_id)

    def find(self, node: bytes) -> Certificate | None:
        """The certificate held for a node id, or for the short id a compact header names."""
        if len(node) == SHORT_ID_LEN:
            node = self._short_ids.get(node, b"")
        return self._certificates.get(node)

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
        if self._context is not None and self._context[0] == self.groups:
            return self._context[1]  # the same object: its mappings are never changed in place
        names = {role for cert in self._certificates.values() for role in cert.roles} | set(self.groups)
        context = CompactContext.from_names(list(self._certificates), sorted(names))
        self._context = (self.groups, context)
        return context
