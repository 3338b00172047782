"""The deterministic network simulator: real node engines on a simulated clock (``mesh112 sim``).

Entry point: ``relay.sim.world.run_scenario(relay.sim.scenario.load_scenario(path))`` returns a
``relay.sim.report.Report``. See docs/simulator.md.
"""
