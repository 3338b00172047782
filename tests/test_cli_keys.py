"""The real ``mesh112`` console script: init, authority init/enroll/revoke, id show, demo; user mistakes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crypto.keystore import load_node_keys
from field.deployment import DEMO_NODES, create_demo_deployment
from relay.config import load_config

MESH112 = shutil.which("mesh112", path=str(Path(sys.executable).parent)) or "mesh112"


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {key: value for key, value in os.environ.items() if key != "MESH112_PASSPHRASE"}
    full_env.update(env or {})
    return subprocess.run(
        [MESH112, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60, env=full_env
    )


def test_happy_path_init_enroll_show_revoke(tmp_path: Path) -> None:
    assert run("authority", "init", "auth", cwd=tmp_path).returncode == 0
    done = run("init", "cp", "--name", "Command Post", "--roles", "dispatcher,admin", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert load_config(tmp_path / "cp" / "node.toml").node.roles == ("admin", "dispatcher")
    enrolled = run("authority", "enroll", "--authority", "auth", "cp", "--days", "30", cwd=tmp_path)
    assert enrolled.returncode == 0, enrolled.stderr
    assert "as admin, dispatcher" in enrolled.stdout
    show = run("id", "show", "cp", cwd=tmp_path)
    assert show.returncode == 0 and "status     valid" in show.stdout and "Command Post" in show.stdout
    keys = load_node_keys(tmp_path / "cp", now=int(__import__("time").time()))
    assert keys.certificate.name == "Command Post"

    short_id = show.stdout.split()[2]
    revoked = run("authority", "revoke", "--authority", "auth", short_id, "--reason", "lost", cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert "serial 1" in revoked.stdout
    # the node directory learns of it when the list is distributed; here, copy it by hand
    shutil.copy(tmp_path / "auth" / "revocations.bin", tmp_path / "cp" / "revocations.bin")
    assert "REVOKED" in run("id", "show", "cp", cwd=tmp_path).stdout


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An authority and one unenrolled node; the mistakes below must leave them unchanged."""
    root = tmp_path_factory.mktemp("field")
    assert run("authority", "init", "auth", cwd=root).returncode == 0
    assert run("init", "node", "--name", "Node", cwd=root).returncode == 0
    return root


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("authority", "enroll", "--authority", "missing", "node"), 1, "not an authority directory"),
        (
            ("init", "bad", "--name", "X", "--roles", "Not A Role"),
            2,
            "--roles: role 'Not A Role' is not valid",
        ),
        (("id", "show", "nowhere"), 1, "identity.pub not found in nowhere"),
        (("init", "node", "--name", "again"), 1, "already has an identity.key"),
        (
            ("authority", "enroll", "--authority", "auth", "node", "--roles", "relay", "--days", "0"),
            2,
            "--days must be",
        ),
        (
            ("authority", "revoke", "--authority", "auth", "zzzzzz", "--reason", "x"),
            1,
            "no enrolled node ids",
        ),
        (("authority", "token", "--authority", "auth", "--scrape", "--roles", "admin"), 2, "drop --operator"),
        (("send", "--token", "t", "node:zz", "hello"), 2, "argument to: node:zz: a node id is 32 hex digits"),
        (("send", "--token", "t", "role:", "hello"), 2, "role:: a role name is 1-64 bytes"),
        (("status", "--token", "t", "12ab"), 2, "'12ab' is not a bundle id"),
        (("send", "--token", "t", "--api", "http://127.0.0.1:9", "x", "y"), 1, "cannot reach the node API"),
        (("send", "x", "y"), 1, "no operator token"),
    ],
)
def test_user_mistakes_give_one_line_and_the_exit_code(
    field: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    """2: the command line is wrong (fix it and run again); 1: it failed at run time."""
    done = run(*args, cwd=field, env={"MESH112_TOKEN": ""})
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert message in done.stderr


def test_world_readable_key_is_refused_with_a_fix(tmp_path: Path) -> None:
    assert run("authority", "init", "auth", cwd=tmp_path).returncode == 0
    os.chmod(tmp_path / "auth" / "authority.key", 0o644)
    assert run("init", "n", "--name", "N", cwd=tmp_path).returncode == 0
    done = run("authority", "enroll", "--authority", "auth", "n", "--roles", "relay", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "readable by other users (mode 0644); run chmod 600" in done.stderr


def test_encrypted_authority_via_environment(tmp_path: Path) -> None:
    env = {"MESH112_PASSPHRASE": "field day at the depot"}
    assert run("authority", "init", "auth", "--encrypt", cwd=tmp_path, env=env).returncode == 0
    assert run("init", "n", "--name", "N", cwd=tmp_path).returncode == 0
    done = run("authority", "enroll", "--authority", "auth", "n", "--roles", "relay", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    wrong = run(
        "authority",
        "enroll",
        "--authority",
        "auth",
        "n",
        "--roles",
        "relay",
        cwd=tmp_path,
        env={"MESH112_PASSPHRASE": "nope"},
    )
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr


def test_missing_arguments_are_argparse_errors(tmp_path: Path) -> None:
    done = run("authority", "enroll", "node", cwd=tmp_path)
    assert done.returncode == 2 and "--authority" in done.stderr and "Traceback" not in done.stderr


def test_demo_command_is_idempotent(tmp_path: Path) -> None:
    first = run("demo", "--create-only", "--dir", "field", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    for name in ("Command Post", "Field Relay 1", "Field Relay 2", "Responder 1"):
        assert name in first.stdout
    second = run("demo", "--create-only", "--dir", "field", cwd=tmp_path)
    assert second.stdout == first.stdout
    deployment = create_demo_deployment(tmp_path / "field")
    assert len({node.node_id[:3] for node in deployment.nodes}) == len(DEMO_NODES)
    cp = deployment.node("Command Post")
    assert cp.certificate.roles == {"admin", "dispatcher"}
    assert load_config(cp.config).api.enabled
    assert not load_config(deployment.node("Responder 1").config).api.enabled


def test_authority_token_for_new_and_enrolled_operators_verifies(tmp_path: Path) -> None:
    import time

    from crypto.certificate import Authority
    from crypto.identity import display_id
    from relay.api.tokens import verify_token

    assert run("authority", "init", "auth", cwd=tmp_path).returncode == 0
    issued = run(
        "authority", "token", "--authority", "auth", "--name", "Anna", "--roles", "dispatcher", cwd=tmp_path
    )
    assert issued.returncode == 0, issued.stderr
    authority = Authority.load(tmp_path / "auth")
    operator = verify_token(issued.stdout.strip(), authority.public, authority.revocations, int(time.time()))
    assert operator.name == "Anna" and operator.roles == frozenset({"dispatcher"})
    again = run(
        "authority", "token", "--authority", "auth", "--operator", display_id(operator.node_id), cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    same = verify_token(again.stdout.strip(), authority.public, authority.revocations, int(time.time()))
    assert same.node_id == operator.node_id
    missing = run("authority", "token", "--authority", "auth", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "--operator" in missing.stderr


def test_scrape_token_reads_metrics_only_and_does_not_expire(tmp_path: Path) -> None:
    from crypto.certificate import Authority
    from relay.api.permissions import MATRIX, Action
    from relay.api.tokens import verify_token

    assert run("authority", "init", "auth", cwd=tmp_path).returncode == 0
    issued = run("authority", "token", "--authority", "auth", "--scrape", cwd=tmp_path)
    assert issued.returncode == 0, issued.stderr
    assert "no expiry" in issued.stderr and "mesh112 authority revoke" in issued.stderr
    authority = Authority.load(tmp_path / "auth")
    in_2100 = 4_102_444_800
    scraper = verify_token(issued.stdout.strip(), authority.public, authority.revocations, in_2100)
    assert scraper.roles == frozenset({"scraper"}) and scraper.name == "Prometheus scraper"
    assert scraper.expires == 0xFFFF_FFFF
    assert [action for action in Action if "scraper" in MATRIX[action]] == [Action.METRICS]


def test_version_is_the_installed_distribution_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    done = run("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == f"mesh112 {version('mesh112')}\n"
