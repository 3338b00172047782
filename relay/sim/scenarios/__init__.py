"""Scenario files shipped with Mesh112 (``mesh112 sim reference``); a package so wheels carry them."""
