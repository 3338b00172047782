"""WebRTC signalling over IP: the node's ``webrtc`` links take offers through the relay API.

``POST /api/v1/webrtc/signal`` takes an encoded signal (``application/octet-stream``, at most
:data:`relay.links.webrtc_signal.MAX_SIGNAL` bytes: what :meth:`WebRtcLink.offer` makes) and returns
the encoded answer, or 204 when the signal was an answer. The signal carries its own proof (the
sending node's signature over its DTLS fingerprint, checked against the trust store), so the operator
token only decides who may knock. ``POST /api/v1/webrtc/connect`` makes the node offer a data
channel to a peer over the mesh (an SOS video request travels as FLASH); ``GET /api/v1/webrtc``
lists the links, their open channels, their signalling counts and the units whose video arrives
(what the console's "Live video" panel offers). ``POST /api/v1/webrtc/view/<node>``
takes a viewer's (browser's) SDP offer and answers with that unit's live video, relayed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from relay.api.permissions import Action
from relay.api.tokens import Operator
from relay.links.base import LinkError
from relay.links.webrtc_signal import MAX_SIGNAL, SignalError

if TYPE_CHECKING:
    from relay.api.app import ApiContext
    from relay.links.webrtc import WebRtcLink  # aiortc (the "video" extra) loads with the link only

Require = Callable[[Action], Callable[[Request], Awaitable[Operator]]]
OCTETS = "application/octet-stream"
MAX_VIEWER_SDP = 16 * 1024


class WebRtcLinkOut(BaseModel):
    name: str
    peers_up: list[str] = Field(description="node ids (hex) with an open data channel")
    offers_made: int
    offers_answered: int
    signals_refused: int
    ice_restarts: int
    streams: list[str] = Field(description="node ids (hex) whose live video arrives now: POST /view/<node>")
    viewers: int = Field(description="viewers connected now; they share each unit's one uplink")


class SessionDescriptionJson(BaseModel):
    """A browser's RTCSessionDescription, as ``JSON.stringify(pc.localDescription)`` writes it."""

    type: str = Field(pattern="^(offer|answer)$")
    sdp: str = Field(max_length=MAX_VIEWER_SDP)


class ConnectIn(BaseModel):
    peer: str = Field(pattern="^[0-9a-fA-F]{32}$", description="the node id to offer a data channel to")
    sos: bool = Field(default=False, description="an SOS video request: the offer travels as FLASH")
    link: str | None = Field(default=None, description="which webrtc link; default: the first")


def webrtc_links(ctx: ApiContext) -> dict[str, WebRtcLink]:
    """The node's webrtc links by name (none when the API runs on something without links)."""
    links = getattr(ctx.node, "links", None)
    if not isinstance(links, Mapping):
        return {}
    return {name: link for name, link in links.items() if getattr(link.profile, "kind", None) == "webrtc"}


def webrtc_router(ctx: ApiContext, require: Require) -> APIRouter:
    router = APIRouter(prefix="/api/v1/webrtc", tags=["webrtc"])

    def pick(name: str | None) -> WebRtcLink:
        links = webrtc_links(ctx)
        if not links:
            raise HTTPException(404, 'this node has no webrtc link ([[links]] type = "webrtc" in node.toml)')
        if name is None:
            return next(iter(links.values()))
        if name not in links:
            raise HTTPException(404, f"no webrtc link named {name!r}; this node has {sorted(links)}")
        return links[name]

    @router.get("", dependencies=[Depends(require(Action.READ_LINKS))])
    async def links() -> list[WebRtcLinkOut]:
        out = []
        for link in webrtc_links(ctx).values():
            figures = asdict(link.metrics())
            del figures["peers_up"]
            sink = link.video_sink
            out.append(
                WebRtcLinkOut(
                    **figures,
                    peers_up=[peer.hex() for peer in link.peers()],
                    streams=[peer.hex() for peer in sink.live()] if sink else [],
                    viewers=sink.viewers() if sink else 0,
                )
            )
        return out

    @router.post(
        "/signal",
        dependencies=[Depends(require(Action.SEND_MESSAGE))],
        responses={200: {"content": {OCTETS: {}}, "description": "the encoded answer"}, 204: {}},
    )
    async def signal(request: Request, link: str | None = Query(default=None)) -> Response:
        """Body: an encoded offer or answer (at most 512 bytes)."""
        body = await request.body()
        if len(body) > MAX_SIGNAL:
            raise HTTPException(413, f"a signal is at most {MAX_SIGNAL} bytes, got {len(body)}")
        try:
            answer = await pick(link).accept(body)
        except SignalError as exc:
            raise HTTPException(422, f"signal refused: {exc}") from None
        except LinkError as exc:  # the link is stopping with the node: the peer offers again later
            raise HTTPException(503, f"{exc}; offer again once the node is back") from None
        if answer is None:
            return Response(status_code=204)
        return Response(answer, media_type=OCTETS)

    @router.post("/connect", status_code=202, dependencies=[Depends(require(Action.SEND_MESSAGE))])
    async def connect(body: ConnectIn) -> dict[str, str]:
        """Offer ``peer`` a data channel over the mesh until it is up (the node's mesh signaller)."""
        chosen = pick(body.link)
        if chosen.signaller is None:
            raise HTTPException(
                409, f"link {chosen.config.name} has no signaller; POST the offer to the peer instead"
            )
        try:
            chosen.connect(bytes.fromhex(body.peer), sos=body.sos)
        except LinkError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"link": chosen.config.name, "peer": body.peer.lower()}

    @router.post("/view/{node}", dependencies=[Depends(require(Action.READ_RECORDS))])
    async def view(
        node: str, offer: SessionDescriptionJson, link: str | None = Query(default=None)
    ) -> SessionDescriptionJson:
        """A viewer (the console's video tile) offers to receive ``node``'s live video; the answer
        comes back. One uplink from the unit serves every viewer."""
        chosen = pick(link)
        if offer.type != "offer":
            raise HTTPException(422, "post the viewer's offer (type 'offer')")
        try:
            peer = bytes.fromhex(node)
        except ValueError:
            raise HTTPException(422, f"{node!r} is not a node id (32 hex digits)") from None
        if chosen.video_sink is None:
            raise HTTPException(409, f"link {chosen.config.name} does not receive video on this node")
        try:
            answer = await chosen.video_sink.view(peer, offer.sdp)
        except KeyError:
            raise HTTPException(404, f"no live video from {node} now") from None
        except ValueError as exc:
            raise HTTPException(422, f"the viewer's offer does not apply: {exc}") from None
        return SessionDescriptionJson(type="answer", sdp=answer)

    return router
