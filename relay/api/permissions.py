"""Who may do what on the relay API: one explicit matrix, tested endpoint by endpoint.

Roles come from the operator's enrolment certificate (carried in its API token). An operator holds
one or more roles; an action is allowed when any of them is listed for it. ``scraper`` is the role
of a Prometheus scrape credential (``mesh112 authority token --scrape``): it may read metrics, nothing
else.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    READ_MESSAGES = "read_messages"
    SEND_MESSAGE = "send_message"
    REPORT_POSITION = "report_position"
    READ_STATUS = "read_status"
    READ_UNITS = "read_units"
    READ_LINKS = "read_links"
    READ_RECORDS = "read_records"
    READ_OWN_RECORDS = "read_own_records"  # only records the operator's own node originated (a building)
    SUBMIT_ALARM = "submit_alarm"
    SUBMIT_DETECTION = "submit_detection"
    ACK_RECORD = "ack_record"
    STREAM = "stream"
    METRICS = "metrics"
    REVOKE = "revoke"


ROLES = ("admin", "dispatcher", "observer", "building", "camera", "responder", "scraper")

MATRIX: dict[Action, frozenset[str]] = {
    Action.READ_MESSAGES: frozenset({"admin", "dispatcher", "observer", "responder"}),
    Action.SEND_MESSAGE: frozenset({"admin", "dispatcher", "responder"}),
    Action.REPORT_POSITION: frozenset({"admin", "dispatcher", "responder"}),
    Action.READ_STATUS: frozenset({"admin", "dispatcher", "observer", "responder", "building", "camera"}),
    Action.READ_UNITS: frozenset({"admin", "dispatcher", "observer", "responder"}),
    Action.READ_LINKS: frozenset({"admin", "dispatcher", "observer"}),
    Action.READ_RECORDS: frozenset({"admin", "dispatcher", "observer"}),
    Action.READ_OWN_RECORDS: frozenset({"admin", "dispatcher", "observer", "building"}),
    Action.SUBMIT_ALARM: frozenset({"admin", "building"}),
    Action.SUBMIT_DETECTION: frozenset({"admin", "camera"}),
    Action.ACK_RECORD: frozenset({"admin", "dispatcher"}),
    Action.STREAM: frozenset({"admin", "dispatcher", "observer", "building"}),  # building: own records
    Action.METRICS: frozenset({"admin", "observer", "scraper"}),
    Action.REVOKE: frozenset({"admin"}),
}


def allowed(roles: frozenset[str], action: Action) -> bool:
    return not roles.isdisjoint(MATRIX[action])
