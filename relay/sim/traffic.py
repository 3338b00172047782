"""Traffic for a run: every application send, drawn in advance from the scenario's seeded generators.

Drawing all sends before the run (rather than during it) keeps the traffic identical whatever the
engine does, so two engines, or two versions of one, are compared on exactly the same load.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from relay.bundle import Priority
from relay.sim.scenario import Scenario

SERIAL = struct.Struct(">Q")  # every simulated payload starts with its serial number


@dataclass(frozen=True, slots=True)
class PlannedSend:
    at_s: float
    serial: int
    src: str
    dst: str
    priority: Priority
    size: int
    lifetime_s: int

    def payload(self) -> bytes:
        return SERIAL.pack(self.serial) + bytes(self.size - SERIAL.size)


def serial_of(payload: bytes) -> int | None:
    """The serial a simulated payload carries, None if it is not one of ours."""
    if len(payload) < SERIAL.size:
        return None
    value: int = SERIAL.unpack_from(payload)[0]
    return value


def plan_traffic(scenario: Scenario, max_sends: int = 1_000_000) -> tuple[PlannedSend, ...]:
    """All sends of the run in time order, serials numbered from 1 in that order."""
    drafts: list[tuple[float, int, int, str, str]] = []  # (time, generator, n, src, dst)
    for index, spec in enumerate(scenario.traffic):
        for src in spec.src:
            rng = random.Random(f"{scenario.seed}:traffic:{index}:{src}")
            targets = [d for d in spec.dst if d != src]
            if not targets:
                continue
            times: list[float] = []
            if spec.rate_per_min > 0:
                t = spec.start_s + rng.expovariate(spec.rate_per_min / 60.0)
                while t < spec.stop_s:
                    times.append(t)
                    if len(drafts) + len(times) > max_sends:
                        raise ValueError(f"the scenario asks for more than {max_sends} sends")
                    t += rng.expovariate(spec.rate_per_min / 60.0)
            else:
                times = [t for t in spec.at_s for _ in range(spec.count)]
            for n, t in enumerate(times):
                drafts.append((t, index, n, src, rng.choice(targets)))
    if len(drafts) > max_sends:
        raise ValueError(f"the scenario asks for more than {max_sends} sends")
    drafts.sort()
    sends = []
    for serial, (t, index, _, src, dst) in enumerate(drafts, start=1):
        spec = scenario.traffic[index]
        sends.append(PlannedSend(t, serial, src, dst, spec.priority, spec.size, spec.lifetime_s))
    return tuple(sends)
