"""The run's contacts: every linked pair with its concrete, seeded up/down schedule.

Each contact's random schedule has its own random stream, seeded from the scenario seed and the
contact's name, so adding a link or a traffic generator never changes the other contacts.
"""

from __future__ import annotations

import random

from relay.sim.links import Contact
from relay.sim.oracle import Oracle
from relay.sim.scenario import Scenario
from relay.sim.schedule import Schedule


def build_contacts(scenario: Scenario) -> tuple[Contact, ...]:
    """Every linked pair, with partitions cut out of its schedule (node crashes are not)."""
    horizon = scenario.end_s
    contacts = []
    for link in scenario.links:
        for a, b in link.pairs:
            rng = random.Random(f"{scenario.seed}:contact:{link.name}:{a}:{b}")
            schedule = link.schedule.build(rng, horizon)
            cuts = [(p.start_s, p.end_s) for p in scenario.partitions if (a in p.side) != (b in p.side)]
            contacts.append(Contact(link, a, b, schedule.minus(cuts)))
    return tuple(contacts)


def node_alive(scenario: Scenario, node: str) -> Schedule:
    """When ``node`` is running: always, except from each crash to its restart."""
    down = [
        (c.at_s, scenario.end_s if c.restart_s is None else c.restart_s)
        for c in scenario.crashes
        if c.node == node
    ]
    return Schedule.always(scenario.end_s).minus(down)


def alive_contacts(scenario: Scenario, contacts: tuple[Contact, ...]) -> tuple[Contact, ...]:
    """Each contact only while both of its nodes are running: what the oracle searches."""
    alive = {node.name: node_alive(scenario, node.name) for node in scenario.nodes}
    return tuple(
        Contact(c.link, c.a, c.b, c.schedule.intersect(alive[c.a]).intersect(alive[c.b])) for c in contacts
    )


def build_oracle(scenario: Scenario, contacts: tuple[Contact, ...]) -> Oracle:
    return Oracle(alive_contacts(scenario, contacts))
