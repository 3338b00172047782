"""The demo field and the harness around real relay processes.

``mesh112 demo`` (what ``make run`` starts), the Meshtastic device emulator (``mesh112 lora-emulator``)
and the helpers that tests and benchmarks use to run relay processes on loopback. Nothing in the
product (``relay``, ``crypto``, ``ng112``, ``analytics_edge``, ``mobile``) imports this package; it
registers its commands through the ``mesh112.commands`` entry-point group like any application.
"""
