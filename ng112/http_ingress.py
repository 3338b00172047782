"""HTTP alternative for panels that cannot speak SIP: POST a CAP (or a multipart CAP + PIDF-LO).

Same decision and durability rules as the SIP gateway (it runs through :meth:`Gateway.process`),
with the status codes mapped to HTTP: 200 after the alarm is durable; 415 + ``Accept``; 422 with
``AlertMsg-Error`` (SIP 425) or ``Geolocation-Error`` (SIP 424); 429 + ``Retry-After`` on the
per-sender rate limit and 503 + ``Retry-After`` on overload or storage failure (SIP 500); 413 when
the body is over the size limit. The sender is the CAP ``<sender>`` (the relay API in front of this
route authenticates the panel). Mount the returned app, e.g. under ``/api/v1/ng112``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ng112.gateway import Gateway
from ng112.multipart import parse_content_type
from ng112.request import ACCEPT_HEADER, ACCEPTED_TYPES, evaluate_body
from ng112.sip import MAX_MESSAGE

_SIP_TO_HTTP = {425: 422, 424: 422, 415: 415, 400: 400, 404: 404, 405: 405}


def http_ingress_app(gateway: Gateway) -> Starlette:
    async def post_alarm(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_MESSAGE:
            return JSONResponse({"error": f"body over {MAX_MESSAGE} bytes"}, status_code=413)
        content_type = parse_content_type(request.headers.get("content-type", ""))
        if content_type.mime not in ACCEPTED_TYPES:
            return JSONResponse({"error": "unsupported media type"}, 415, headers={"Accept": ACCEPT_HEADER})
        sender = request.headers.get("x-panel-sender", "")
        peer = (request.client.host, request.client.port) if request.client else ("", 0)
        warnings: list[str] = []

        def decide():  # type: ignore[no-untyped-def]
            return evaluate_body(
                content_type, body, warnings, cap_refs=[], geolocation_refs=[], policy=gateway.config.policy,
                sender_uri=sender, call_id=request.headers.get("x-request-id", ""),
            )  # fmt: skip

        status, reason, headers = await gateway.process(sender or peer[0], decide, peer, "http")
        if status == 200:
            return JSONResponse({"status": "accepted", "warnings": warnings}, 200)
        http_status = _SIP_TO_HTTP.get(status, 503)
        if "rate limit" in reason:
            http_status = 429
        return JSONResponse({"error": reason, "warnings": warnings}, http_status, headers=dict(headers))

    return Starlette(routes=[Route("/alarms", post_alarm, methods=["POST"])])
