"""``mesh112 init``, ``mesh112 authority init|enroll|revoke|token|invite`` and ``mesh112 id show``.

Passphrases: ``--encrypt`` protects a new private key with a passphrase taken from the
``MESH112_PASSPHRASE`` environment variable or asked for on the terminal; loading an encrypted key
uses the same variable or asks.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys
import time
from pathlib import Path
from typing import Any

from crypto.certificate import MAX_U32, Authority
from crypto.errors import CryptoError, ExpiredError, KeyFileError, RevokedError
from crypto.identity import Identity, display_id
from crypto.keystore import (
    load_authority_public,
    load_certificate,
    load_public_identity,
    load_revocations,
    save_revocations,
)
from relay.cli.invite import register_invite
from relay.enrolment import enrol_node, init_node, node_name, parse_roles, rotate_group_keys
from relay.errors import Mesh112Error, UsageError

PASSPHRASE_ENV = "MESH112_PASSPHRASE"
TOKEN_ENV = "MESH112_TOKEN"
GROUP_KEYS_PER_POST = 100  # a request body stays far below the API's 64 KiB
NEVER = MAX_U32  # the last second a certificate can name (2106-02-07): a scrape token that does not expire
SCRAPE_ROLE = "scraper"


def register(subparsers: Any) -> None:
    init = subparsers.add_parser("init", help="create a node directory with a new identity and node.toml")
    init.add_argument("node_dir", type=Path, metavar="NODE_DIR")
    init.add_argument("--name", required=True, help="display name of the node, e.g. 'Engine 7'")
    init.add_argument("--roles", default="", help="comma-separated roles for node.toml, e.g. relay,responder")
    init.add_argument(
        "--encrypt", action="store_true", help=f"protect the key with a passphrase (${PASSPHRASE_ENV})"
    )
    init.set_defaults(func=_cmd_init)

    authority = subparsers.add_parser(
        "authority", help="the deployment authority: create, enrol nodes, revoke"
    )
    actions = authority.add_subparsers(dest="action", metavar="ACTION", required=True)
    a_init = actions.add_parser("init", help="create the deployment authority in DIR")
    a_init.add_argument("authority_dir", type=Path, metavar="DIR")
    a_init.add_argument("--encrypt", action="store_true", help="protect the authority key with a passphrase")
    a_init.set_defaults(func=_cmd_authority_init)
    enroll = actions.add_parser("enroll", help="issue a certificate for a node directory")
    enroll.add_argument(
        "--authority", type=Path, required=True, metavar="DIR", help="the authority directory"
    )
    enroll.add_argument("node_dir", type=Path, metavar="NODE_DIR")
    enroll.add_argument("--roles", help="comma-separated roles (default: the roles in the node's node.toml)")
    enroll.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    enroll.add_argument("--name", help="display name (default: the name in the node's node.toml)")
    enroll.set_defaults(func=_cmd_enroll)
    revoke = actions.add_parser("revoke", help="revoke a node and update the revocation list")
    revoke.add_argument(
        "--authority", type=Path, required=True, metavar="DIR", help="the authority directory"
    )
    revoke.add_argument(
        "node", metavar="NODE_ID_OR_DIR", help="a node directory or (a prefix of) its node id"
    )
    revoke.add_argument("--reason", required=True, help="why, for the operators who will read it")
    revoke.add_argument(
        "--via",
        metavar="URL",
        help="a running node's API (e.g. http://127.0.0.1:8112): it applies the list at once and "
        "floods it to every node as a FLASH bundle",
    )
    revoke.add_argument("--token", help="an admin's API token for --via (default: $MESH112_TOKEN)")
    revoke.set_defaults(func=_cmd_revoke)
    token = actions.add_parser(
        "token",
        help="issue a relay API token for an operator",
        description="Prints an API token on stdout. With --operator, for an enrolled identity; otherwise "
        "enrols a new operator identity with --name and --roles (revoke it by the id printed on stderr). "
        "With --scrape, a credential for Prometheus: a new identity that may only read /metrics, "
        "with no expiry (revoke it to withdraw it).",
    )
    token.add_argument("--authority", type=Path, required=True, metavar="DIR", help="the authority directory")
    token.add_argument("--operator", metavar="NODE_ID_OR_DIR", help="an enrolled operator (id prefix or dir)")
    token.add_argument("--name", help="display name of a new operator")
    token.add_argument("--roles", help="roles of a new operator, e.g. dispatcher or observer")
    token.add_argument("--days", type=int, default=7, help="token validity in days (default 7)")
    token.add_argument(
        "--scrape", action="store_true", help="a metrics-only token that does not expire, for Prometheus"
    )
    token.set_defaults(func=_cmd_token)
    register_invite(actions, _load_authority)  # mesh112 authority invite (relay/cli/invite.py)

    ident = subparsers.add_parser("id", help="show a node's identity and enrolment")
    ident_actions = ident.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = ident_actions.add_parser("show", help="print node id, name, roles, expiry and status")
    show.add_argument("node_dir", type=Path, nargs="?", default=Path("."), metavar="NODE_DIR")
    show.set_defaults(func=_cmd_id_show)


def _new_passphrase(wanted: bool) -> str | None:
    if not wanted:
        return None
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if not sys.stdin.isatty():
        raise Mesh112Error(f"--encrypt needs a passphrase: set {PASSPHRASE_ENV} or run on a terminal")
    first = getpass.getpass("New passphrase: ")
    if first != getpass.getpass("Repeat passphrase: "):
        raise Mesh112Error("the passphrases differ; nothing was written")
    return first


def _load_authority(directory: Path) -> Authority:
    try:
        return Authority.load(directory, os.environ.get(PASSPHRASE_ENV))
    except KeyFileError as exc:
        if "is encrypted" not in str(exc) or not sys.stdin.isatty():
            raise
        return Authority.load(directory, getpass.getpass(f"Passphrase for the authority in {directory}: "))


def _roles_argument(text: str) -> tuple[str, ...]:
    try:
        return parse_roles(text)
    except (Mesh112Error, CryptoError) as exc:
        raise UsageError(f"--roles: {exc}") from None


def _cmd_init(args: argparse.Namespace) -> int:
    roles = _roles_argument(args.roles)
    identity = init_node(args.node_dir, args.name, roles, _new_passphrase(args.encrypt))
    print(f"created node {args.name!r} in {args.node_dir}")
    print(f"  node id  {display_id(identity.node_id)}  ({display_id(identity.node_id, full=True)})")
    print(f"  next     mesh112 authority enroll --authority AUTHORITY_DIR {args.node_dir}")
    return 0


def _cmd_authority_init(args: argparse.Namespace) -> int:
    directory: Path = args.authority_dir
    if (directory / "authority.key").exists():
        raise Mesh112Error(f"{directory} already holds an authority; refusing to replace it")
    authority = Authority.generate()
    authority.save(directory, _new_passphrase(args.encrypt))
    print(f"created the deployment authority in {directory}")
    print(f"  authority id  {display_id(authority.identity.node_id, full=True)}")
    print("  keep authority.key offline or on the command post only; it can enrol and revoke every node")
    return 0


def _cmd_enroll(args: argparse.Namespace) -> int:
    authority = _load_authority(args.authority)
    if not 1 <= args.days <= 3650:
        raise UsageError("--days must be between 1 and 3650")
    if args.roles is not None:
        roles = _roles_argument(args.roles)
    else:
        config_roles = _config_roles(args.node_dir)
        if not config_roles:
            raise Mesh112Error(
                "no roles given: pass --roles (e.g. --roles responder) or list them in node.toml"
            )
        roles = config_roles
    cert = enrol_node(authority, args.authority, args.node_dir, roles, args.days, args.name)
    print(f"enrolled {cert.name!r} ({display_id(cert.node_id)}) as {', '.join(sorted(cert.roles))}")
    print(f"  valid until {_utc(cert.expires)}; certificate written to {args.node_dir / 'certificate.bin'}")
    return 0


def _config_roles(node_dir: Path) -> tuple[str, ...]:
    from relay.config import load_config

    config = node_dir / "node.toml"
    return parse_roles(",".join(load_config(config).node.roles)) if config.exists() else ()


def _cmd_revoke(args: argparse.Namespace) -> int:
    authority = _load_authority(args.authority)
    target = Path(args.node)
    if target.is_dir():
        node_id = load_public_identity(target).node_id
        label = node_name(target) or str(target)
    else:
        cert = authority.find(args.node.lower())
        node_id, label = cert.node_id, cert.name
    revocations = authority.revoke(node_id, args.reason)
    authority.save(args.authority)
    if target.is_dir():
        save_revocations(target, revocations)
    print(f"revoked {label!r} ({display_id(node_id)}): {args.reason}")
    if args.via:
        token = args.token or os.environ.get(TOKEN_ENV)
        reply = _post(args.via, token, "/api/v1/revocations", content=revocations.encode())
        print(f"  revocation list serial {revocations.serial} published through {args.via}")
        print(f"  every node applies it as the FLASH bundle {reply['bundle_id']} reaches it")
        rotated = rotate_group_keys(authority, args.authority, int(time.time()))
        entries = [
            {"node": node.hex(), "wrapped": base64.b64encode(wrapped).decode()}
            for node, keys in rotated.items()
            for wrapped in keys
        ]
        for start in range(0, len(entries), GROUP_KEYS_PER_POST):
            _post(
                args.via,
                token,
                "/api/v1/group-keys",
                json={"keys": entries[start : start + GROUP_KEYS_PER_POST]},
            )
        print(f"  group keys rotated: {len(entries)} new keys sent to {len(rotated)} remaining members")
    else:
        listed = args.authority / "revocations.bin"
        print(f"  revocation list serial {revocations.serial}: distribute {listed}")
        print("  or publish it to the running deployment: add --via http://NODE:8112 --token ADMIN_TOKEN")
    return 0


def _post(url: str, token: str | None, path: str, **body: Any) -> dict[str, Any]:
    """POST to a running node's API as an admin (``--via``); its JSON answer."""
    import httpx

    if not token:
        raise UsageError(f"--via needs an admin's API token: give --token or set ${TOKEN_ENV}")
    headers = {"Authorization": f"Bearer {token}"}
    if "content" in body:
        headers["Content-Type"] = "application/octet-stream"
    try:
        response = httpx.post(f"{url.rstrip('/')}{path}", headers=headers, timeout=30.0, **body)
    except httpx.HTTPError as exc:
        raise Mesh112Error(
            f"the revocation is saved, but {url} could not be reached ({exc}); run the command again "
            "with --via once it answers, or distribute revocations.bin by hand"
        ) from None
    if response.status_code != 202:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise Mesh112Error(
            f"the revocation is saved, but {url} refused {path} (HTTP {response.status_code}): {detail}"
        )
    answer: dict[str, Any] = response.json()
    return answer


def _cmd_token(args: argparse.Namespace) -> int:
    from relay.api.tokens import issue_token

    if args.scrape:
        if args.operator or args.roles:
            raise UsageError(
                "--scrape makes its own identity with the scraper role only: drop --operator, --roles"
            )
        authority = _load_authority(args.authority)
        cert = authority.issue(
            Identity.generate().public, frozenset({SCRAPE_ROLE}), args.name or "Prometheus scraper", NEVER
        )
        authority.save(args.authority)
        print(issue_token(authority.identity, cert, NEVER))
        print(
            f"scrape token for {cert.name!r} ({display_id(cert.node_id)}): reads /metrics only, no expiry; "
            f"withdraw it with mesh112 authority revoke {display_id(cert.node_id)}",
            file=sys.stderr,
        )
        return 0
    if not 1 <= args.days <= 365:
        raise UsageError("--days must be between 1 and 365")
    authority = _load_authority(args.authority)
    now = int(time.time())
    expires = now + args.days * 86_400
    if args.operator:
        target = Path(args.operator)
        prefix = (
            display_id(load_public_identity(target).node_id, full=True)
            if target.is_dir()
            else args.operator.lower()
        )
        cert = authority.find(prefix)
    elif args.name and args.roles:
        cert = authority.issue(
            Identity.generate().public, frozenset(_roles_argument(args.roles)), args.name, expires
        )
        authority.save(args.authority)
    else:
        raise UsageError("give --operator, or --name and --roles for a new operator (or --scrape)")
    print(issue_token(authority.identity, cert, min(expires, cert.expires)))
    print(
        f"token for {cert.name!r} ({display_id(cert.node_id)}) as {', '.join(sorted(cert.roles))}, "
        f"valid until {_utc(min(expires, cert.expires))}",
        file=sys.stderr,
    )
    return 0


def _cmd_id_show(args: argparse.Namespace) -> int:
    directory: Path = args.node_dir
    public = load_public_identity(directory)
    cert = load_certificate(directory)
    authority = load_authority_public(directory)
    print(f"node id    {display_id(public.node_id)}  ({display_id(public.node_id, full=True)})")
    if cert is None or authority is None:
        print(f"name       {node_name(directory) or '-'}")
        print("status     not enrolled (run mesh112 authority enroll)")
        return 0
    print(f"name       {cert.name}")
    print(f"roles      {', '.join(sorted(cert.roles))}")
    print(f"expires    {_utc(cert.expires)}")
    print(f"authority  {display_id(authority.node_id)}")
    try:
        if cert.public != public:
            raise CryptoError("the certificate belongs to another identity; enrol again")
        cert.verify(authority, int(time.time()), load_revocations(directory))
        status = "valid"
    except RevokedError as exc:
        status = f"REVOKED: {exc}"
    except ExpiredError as exc:
        status = f"EXPIRED: {exc}"
    except CryptoError as exc:
        status = f"INVALID: {exc}"
    print(f"status     {status}")
    return 0


def _utc(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix))
