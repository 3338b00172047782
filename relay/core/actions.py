"""What the relay core asks its owner (the engine) to do. The core never does I/O itself.

Actions are not frozen: a relay makes a few per bundle, and a frozen dataclass's init sets each
field through ``object.__setattr__`` (a ``Persist`` 1.02 µs, not 0.25). Nothing changes one after
it is made."""

from __future__ import annotations

from dataclasses import dataclass

from relay.bundle import Bundle, BundleId
from relay.core.receipts import BundleStatus


@dataclass(slots=True)
class Persist:
    """Store ``bundle`` durably (and put it in the app inbox if ``deliver``), then call
    ``RelayCore.persisted``; the neighbour gets its custody ACK only after that. The core hands over
    its own record of the bundle, a subclass: tell it by ``isinstance``."""

    bundle: Bundle
    deliver: bool
    hold: bool  # False: only for this node, keep no forwarding copy


@dataclass(slots=True)
class Replace:
    """Put ``bundle`` (a neighbour's copy) in place of its held copy in the store, which does not
    decode, then call ``RelayCore.replaced``; the neighbour gets its custody ACK only after that."""

    bundle: Bundle


@dataclass(slots=True)
class Drop:
    """Delete the held copies; their ids stay seen so a late duplicate is recognised. Several ids
    for one reason (a custody ACK's, a timer's expiries): one action, not one per bundle."""

    bundle_ids: list[BundleId]
    reason: str


@dataclass(slots=True)
class DeliverLocal:
    """Durable bundles for this node's applications (already in the store's inbox), in order: one
    action for a batch's deliveries, not one per bundle (an init costs about 1,500 instructions)."""

    bundles: list[Bundle]


@dataclass(slots=True)
class MarkForwarded:
    """``peer`` acknowledged durable custody of the bundle over ``link``."""

    bundle_id: BundleId
    peer: bytes
    link: str


@dataclass(slots=True)
class StatusChanged:
    """A bundle originated here moved on (forwarded, delivered, expired)."""

    bundle_id: BundleId
    status: BundleStatus


Action = Persist | Replace | Drop | DeliverLocal | MarkForwarded | StatusChanged
