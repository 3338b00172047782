"""Prometheus metrics of a node: what an operator graphs and alerts on, served at ``/metrics``.

The node's figures are read when Prometheus scrapes (:class:`NodeCollector`), not kept up to date
on the hot paths: a frame sent or a bundle stored costs nothing extra. Families (see docs/api.md):

* ``mesh112_build_info{version}``;
* ``mesh112_link_peer_up{link,kind,peer,name}``: 1 while a neighbour is up on a link, 0 once it went
  down (neighbours seen since the node started);
* ``mesh112_lora_airtime_seconds{link}`` against ``mesh112_lora_airtime_budget_seconds{link}``: own
  transmit time in the last hour and what the region's duty cycle allows per hour;
* ``mesh112_queue_depth{link,priority}``: items waiting to be sent, per class;
* ``mesh112_custody_resends_total``: copies sent again because their custody timeout passed;
* ``mesh112_implicit_acks_total``: custody ACKs taken from a neighbour's overheard forward (LoRa);
* ``mesh112_ip_connections_closed_total{link,why}``: IP connections a link closed for a reason an
  operator acts on (strangers at the caps, failed handshakes, records nng lost);
* ``mesh112_store_bytes``, ``mesh112_store_quota_bytes``, ``mesh112_store_bundles{priority}``,
  ``mesh112_store_inbox``, ``mesh112_store_evictions_total``, ``mesh112_store_damaged_total``
  (held bundles, and inbox copies at start-up, whose stored copy did not decode, dropped: the
  store's file is damaged);
* ``mesh112_security_events_total{what}``: what revoked or hostile peers tried and the node refused
  (frames of a revoked neighbour, forged receipts, stale group epochs, bad revocation lists...), and
  ``mesh112_revocation_serial``: the serial of the revocation list held (-1: none);
* the API's own (:class:`ApiMetrics`), and whatever applications add through ``Node.collectors``
  (the NG112 gateway: ``mesh112_ng112_responses_total{code}``), so ``relay`` imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.bundle import Priority
from relay.core.scheduler import receipts_sender
from relay.links.ip import IpLink
from relay.links.lora_config import LoRaLinkState
from relay.store import StoreStats

if TYPE_CHECKING:
    from relay.node import Node

HOUR_S = 3600.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format every Prometheus reads


@runtime_checkable
class _Radio(Protocol):
    """A link that reports its radio's state (the LoRa link)."""

    def state(self) -> LoRaLinkState: ...


def build_version() -> str:
    """The installed ``mesh112`` distribution's version (``unknown`` when run from a bare tree)."""
    try:
        return version("mesh112")
    except PackageNotFoundError:
        return "unknown"


class ApiMetrics:
    """The API's own counters, kept where they happen (a request, a message sent)."""

    def __init__(self, registry: CollectorRegistry, subscribers: Callable[[], int]) -> None:
        self.requests = Counter("mesh112_api_requests", "API requests", ["action"], registry=registry)
        self.sent = Counter("mesh112_api_messages_sent", "Messages sent through the API", registry=registry)
        stream = Gauge("mesh112_api_stream_subscribers", "Live stream subscribers", registry=registry)
        stream.set_function(subscribers)


class NodeCollector(Collector):
    """Reads the node's links, queues and store when scraped; call :meth:`refresh` just before.

    The store's counts come from SQLite, which only answers asynchronously, so :meth:`refresh`
    reads them and :meth:`collect` (synchronous, as ``prometheus_client`` calls it) reports them.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._stats: StoreStats | None = None
        self._peers_seen: set[tuple[str, bytes]] = set()

    async def refresh(self) -> None:
        self._stats = await self._node.engine.store.stats()

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("mesh112_build", "The running Mesh112 release")
        info.add_metric([], {"version": build_version()})
        yield info
        yield from self._links()
        yield from self._store()
        yield from self._security()
        for collector in self._node.collectors:
            yield from collector.collect()

    def _links(self) -> Iterator[Metric]:
        engine = self._node.engine
        peer_up = GaugeMetricFamily(
            "mesh112_link_peer_up",
            "1 while a neighbour is up on a link, 0 after it went down",
            labels=["link", "kind", "peer", "name"],
        )
        depth = GaugeMetricFamily(
            "mesh112_queue_depth", "Items waiting to be sent on a link", labels=["link", "priority"]
        )
        airtime = GaugeMetricFamily(
            "mesh112_lora_airtime_seconds", "Own LoRa transmit time in the last hour", labels=["link"]
        )
        budget = GaugeMetricFamily(
            "mesh112_lora_airtime_budget_seconds",
            "LoRa transmit time the region's duty cycle allows per hour",
            labels=["link"],
        )
        over_cap = CounterMetricFamily(
            "mesh112_over_cap_frames",
            "Frames sent while their origin was over its FLASH/IMMEDIATE share of the link (a flood), "
            "its own bundles or the receipts answering them",
            labels=["link", "origin", "flow"],
        )
        closed = CounterMetricFamily(
            "mesh112_ip_connections_closed",
            "IP connections closed: refused_at_cap (a source or the listener at its cap), "
            "handshake_refused (failed authentication), lost_records (nng lost records of the peer)",
            labels=["link", "why"],
        )
        for name, link in self._node.links.items():
            kind = link.profile.kind
            up = set(engine.core.neighbours(name))
            self._peers_seen.update((name, peer) for peer in up)
            for seen_on, peer in sorted(self._peers_seen):
                if seen_on == name:
                    certificate = engine.trust.certificate(peer)
                    label = certificate.name if certificate is not None else ""
                    peer_up.add_metric([name, kind, peer.hex(), label], 1.0 if peer in up else 0.0)
            # The core learns a link with its first neighbour; until then nothing waits on it.
            depths = engine.core.queue_depths(name) if engine.core.has_link(name) else {}
            for priority in Priority:
                depth.add_metric([name, priority.name], depths.get(priority, 0))
            capped = engine.core.over_cap_frames(name) if engine.core.has_link(name) else {}
            for flow, count in sorted(capped.items()):
                sender = receipts_sender(flow)
                origin, what = (flow, "bundles") if sender is None else (sender, "receipts")
                over_cap.add_metric([name, origin.hex(), what], count)
            if isinstance(link, _Radio):
                airtime.add_metric([name], link.state().airtime_last_hour_s)
                budget.add_metric([name], link.profile.duty_cycle * HOUR_S)
            if isinstance(link, IpLink):
                figures = link.metrics()
                closed.add_metric([name, "refused_at_cap"], figures.connections_refused)
                closed.add_metric([name, "handshake_refused"], figures.handshakes_refused)
                closed.add_metric([name, "lost_records"], figures.connections_lost_records)
        yield from (peer_up, depth, airtime, budget, over_cap, closed)
        yield CounterMetricFamily(
            "mesh112_custody_resends",
            "Copies sent again because their custody timeout passed",
            value=engine.core.custody.retries,
        )
        yield CounterMetricFamily(
            "mesh112_frames_lost",
            "Frames a link gave up on (LoRa: MAX_RETRANSMIT) whose copy was resent early",
            value=engine.core.frames_lost,
        )
        yield CounterMetricFamily(
            "mesh112_implicit_acks",
            "Custody ACKs taken from a neighbour's overheard forward (LoRa implicit_ack)",
            value=engine.core.implicit_acks,
        )

    def _security(self) -> Iterator[Metric]:
        engine = self._node.engine
        events = CounterMetricFamily(
            "mesh112_security_events", "Attempts by revoked or hostile peers, refused", labels=["what"]
        )
        for what, count in asdict(engine.security).items():
            events.add_metric([what], count)
        yield events
        held = engine.trust.revocations
        yield GaugeMetricFamily(
            "mesh112_revocation_serial",
            "Serial of the revocation list this node holds (-1: none)",
            value=-1 if held is None else held.serial,
        )

    def _store(self) -> Iterator[Metric]:
        stats = self._stats
        if stats is None:
            return
        yield GaugeMetricFamily("mesh112_store_bytes", "Bytes of bundles held", value=stats.bytes_used)
        yield GaugeMetricFamily("mesh112_store_quota_bytes", "The store's quota", value=stats.quota_bytes)
        held = GaugeMetricFamily("mesh112_store_bundles", "Bundles held, per class", labels=["priority"])
        for priority in Priority:
            held.add_metric([priority.name], stats.held_by_priority.get(priority, 0))
        yield held
        yield GaugeMetricFamily(
            "mesh112_store_inbox", "Bundles delivered to apps, not yet acknowledged", value=stats.inbox
        )
        yield CounterMetricFamily(
            "mesh112_store_evictions",
            "Bundles evicted to make room since the node started",
            value=self._node.engine.store.evictions,
        )
        yield CounterMetricFamily(
            "mesh112_store_damaged",
            "Bundles dropped since the node started because their stored copy (held or in the "
            "inbox) did not decode",
            value=self._node.engine.core.damaged_total + self._node.engine.damaged_inbox,
        )
