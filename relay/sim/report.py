"""The figures of one simulator run: a frozen dataclass, a text table for people and JSON for tools.

Delivery is counted against what was *deliverable*: a bundle whose oracle arrival (the earliest
possible on the run's link schedule) falls before both its expiry and the end of the run. A
bundle counts as delivered if the application at its destination got it before it expired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from relay.bundle import Priority
from relay.sim.links import Transmitter
from relay.sim.probe import FlashProbe
from relay.sim.scenario import Scenario


@dataclass(frozen=True, slots=True)
class SentRecord:
    serial: int
    src: str
    dst: str
    priority: Priority
    size: int
    sent_at: float
    lifetime_s: int
    oracle_at: float | None  # earliest possible arrival; None if no path ever

    @property
    def expires_at(self) -> float:
        return self.sent_at + self.lifetime_s


@dataclass(frozen=True, slots=True)
class ClassFigures:
    priority: str
    sent: int
    deliverable: int
    delivered: int  # deliverable bundles delivered before expiry
    delivery_ratio: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_max_s: float | None
    oracle_p50_s: float | None  # median oracle latency of the same delivered bundles
    oracle_p95_s: float | None
    p50_vs_oracle: float | None  # latency_p50_s / oracle_p50_s
    missing: tuple[int, ...]  # serials of deliverable bundles never delivered (first 20)


@dataclass(frozen=True, slots=True)
class LinkFigures:
    """One node's transmitter on one link."""

    node: str
    link: str
    frames: int
    bytes: int
    airtime_s: float
    max_frame_time_s: float
    max_hourly_duty: float  # busiest rolling hour's airtime / 3600 (LoRa), 0 elsewhere
    flash_frames: int  # FLASH frames that started on this transmitter
    flash_max_wait_s: float  # longest a FLASH frame waited for this transmitter
    retries: int = 0  # LoRa: retransmissions by the radio (in frames and airtime)
    acks: int = 0  # LoRa: radio-level ACKs this radio sent (in airtime)
    max_retransmit: int = 0  # LoRa: unicast frames the radio gave up on after every retry


@dataclass(frozen=True, slots=True)
class Report:
    scenario: str
    seed: int
    simulated_s: float
    nodes: int
    classes: tuple[ClassFigures, ...]
    duplicates: int
    bytes_sent: int
    payload_bytes_delivered: int
    bytes_per_delivered_byte: float | None
    store_high_water: Mapping[str, int]
    links: tuple[LinkFigures, ...]
    flash_max_wait_frames: float  # worst FLASH wait in units of that transmitter's longest frame
    refused_sends: int  # sends the engine refused (store full)
    overdue_polls: Mapping[str, int]  # per node: timers needed because the engine's deadline stayed past

    def by_class(self, priority: Priority) -> ClassFigures:
        for figures in self.classes:
            if figures.priority == priority.name:
                return figures
        raise KeyError(priority.name)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["store_high_water"] = dict(self.store_high_water)
        data["overdue_polls"] = dict(self.overdue_polls)
        return data

    def format_text(self) -> str:
        lines = [
            f"scenario {self.scenario}  seed {self.seed}  nodes {self.nodes}  "
            f"simulated {self.simulated_s / 60:.1f} min",
            "",
            f"{'class':<10} {'sent':>6} {'deliv.':>6} {'ok':>6} {'ratio':>7} {'p50 s':>8} {'p95 s':>8} "
            f"{'max s':>8} {'oracle50':>9} {'x oracle':>9}",
        ]
        for c in self.classes:
            lines.append(
                f"{c.priority:<10} {c.sent:>6} {c.deliverable:>6} {c.delivered:>6} "
                f"{_pct(c.delivery_ratio):>7} "
                f"{_num(c.latency_p50_s):>8} {_num(c.latency_p95_s):>8} {_num(c.latency_max_s):>8} "
                f"{_num(c.oracle_p50_s):>9} {_num(c.p50_vs_oracle):>9}"
            )
        overhead = _num(self.bytes_per_delivered_byte)
        lines += [
            "",
            f"duplicates delivered: {self.duplicates}",
            f"bytes sent: {self.bytes_sent}  payload delivered: {self.payload_bytes_delivered}  "
            f"bytes per delivered byte: {overhead}",
            f"worst FLASH wait for a busy link: {self.flash_max_wait_frames:.2f} frame times",
            f"sends refused by the engine: {self.refused_sends}",
            "store high-water (bytes): "
            + ", ".join(f"{name} {size}" for name, size in sorted(self.store_high_water.items())),
        ]
        if self.overdue_polls:
            stuck = ", ".join(f"{name} {n}" for name, n in sorted(self.overdue_polls.items()))
            lines.append(f"ENGINE DEADLINE STAYED IN THE PAST (polled each second): {stuck}")
        busiest = sorted(self.links, key=lambda f: -f.airtime_s)[:8]
        if busiest:
            header = f"{'node':<10} {'link':<8} {'frames':>7} {'bytes':>10} {'airtime s':>10} {'duty':>6}"
            lines += ["", header]
            for f in busiest:
                lines.append(
                    f"{f.node:<10} {f.link:<8} {f.frames:>7} {f.bytes:>10} {f.airtime_s:>10.1f} "
                    f"{_pct(f.max_hourly_duty):>6}"
                )
        return "\n".join(lines)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def class_figures(
    priority: Priority, sent: Sequence[SentRecord], deliveries: Mapping[int, Sequence[float]], end_s: float
) -> ClassFigures:
    mine = [r for r in sent if r.priority is priority]
    deliverable = [r for r in mine if r.oracle_at is not None and r.oracle_at <= min(r.expires_at, end_s)]
    latencies: list[float] = []
    oracle: list[float] = []
    missing: list[int] = []
    for record in deliverable:
        times = deliveries.get(record.serial, ())
        if times and times[0] < record.expires_at and record.oracle_at is not None:
            latencies.append(times[0] - record.sent_at)
            oracle.append(record.oracle_at - record.sent_at)
        else:
            missing.append(record.serial)
    p50, oracle_p50 = percentile(latencies, 0.5), percentile(oracle, 0.5)
    return ClassFigures(
        priority=priority.name,
        sent=len(mine),
        deliverable=len(deliverable),
        delivered=len(latencies),
        delivery_ratio=len(latencies) / len(deliverable) if deliverable else None,
        latency_p50_s=_round(p50),
        latency_p95_s=_round(percentile(latencies, 0.95)),
        latency_max_s=_round(max(latencies) if latencies else None),
        oracle_p50_s=_round(oracle_p50),
        oracle_p95_s=_round(percentile(oracle, 0.95)),
        p50_vs_oracle=_round(p50 / oracle_p50) if p50 is not None and oracle_p50 else None,
        missing=tuple(missing[:20]),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def link_figures(t: Transmitter, probe: FlashProbe) -> LinkFigures:
    key = (t.node, t.link.name)
    return LinkFigures(
        node=t.node,
        link=t.link.name,
        frames=t.frames,
        bytes=t.bytes,
        airtime_s=round(t.airtime_s, 6),
        max_frame_time_s=round(t.max_frame_time_s, 6),
        max_hourly_duty=round(t.max_hourly_airtime() / 3600.0, 6),
        flash_frames=probe.flash_frames(key),
        flash_max_wait_s=round(probe.max_wait(key), 6),
        retries=t.retries,
        acks=t.acks,
        max_retransmit=t.max_retransmit,
    )


def build_report(
    scenario: Scenario,
    records: Sequence[SentRecord],
    deliveries: Mapping[int, Sequence[float]],
    links: tuple[LinkFigures, ...],
    store_high_water: Mapping[str, int],
    refused_sends: int,
    overdue_polls: Mapping[str, int],
) -> Report:
    sizes = {r.serial: r.size for r in records}
    delivered_bytes = sum(sizes[serial] for serial in deliveries if serial in sizes)
    sent_bytes = sum(f.bytes for f in links)
    waits = [f.flash_max_wait_s / f.max_frame_time_s for f in links if f.max_frame_time_s > 0]
    return Report(
        scenario=scenario.name,
        seed=scenario.seed,
        simulated_s=scenario.end_s,
        nodes=len(scenario.nodes),
        classes=tuple(class_figures(p, records, deliveries, scenario.end_s) for p in Priority),
        duplicates=sum(len(times) - 1 for times in deliveries.values()),
        bytes_sent=sent_bytes,
        payload_bytes_delivered=delivered_bytes,
        bytes_per_delivered_byte=round(sent_bytes / delivered_bytes, 6) if delivered_bytes else None,
        store_high_water=dict(store_high_water),
        links=links,
        flash_max_wait_frames=round(max(waits, default=0.0), 6),
        refused_sends=refused_sends,
        overdue_polls=dict(overdue_polls),
    )
