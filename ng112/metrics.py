"""The NG112 gateway's figures for Prometheus, scraped with its node's own (``Node.collectors``).

``mesh112_ng112_responses_total{code}`` counts the SIP final responses the gateway sent (200: alarm
taken and durable; 4xx: refused; 500: rate limited, overloaded or not stored, the panel retries);
``mesh112_ng112_events_total{what}`` counts what :attr:`Gateway.counts` keeps: refusals by reason,
digest challenges, unauthenticated alarms sent on at a lower class.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ng112.gateway import Gateway


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        responses = CounterMetricFamily(
            "mesh112_ng112_responses", "SIP final responses sent by the NG112 gateway", labels=["code"]
        )
        for code, count in sorted(self._gateway.responses.items()):
            responses.add_metric([str(code)], count)
        events = CounterMetricFamily(
            "mesh112_ng112_events",
            "Refusals, challenges and lowered alarms at the NG112 gateway",
            labels=["what"],
        )
        for what, count in sorted(self._gateway.counts.items()):
            events.add_metric([what], count)
        yield responses
        yield events
