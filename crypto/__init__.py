"""Identities, deployment authority, enrolment certificates, revocation, sealing and key storage.

Imports only ``cryptography``: this package knows nothing of bundles or links.
"""
