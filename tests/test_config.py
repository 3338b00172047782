"""Node configuration: the packaged example parses; mistakes name the file, the key and the problem."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.config import load_config, parse_config
from relay.enrolment import example_config, render_node_config
from relay.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_example_in_deploy_is_the_packaged_one_and_parses() -> None:
    assert (REPO / "deploy" / "node.example.toml").read_text() == example_config()
    config = load_config(REPO / "deploy" / "node.example.toml")
    assert config.node.name == "NODE_NAME"
    assert config.node.data_dir == REPO / "deploy"
    assert config.store.quota_mb == 1024
    assert (config.api.enabled, config.api.host, config.api.port) == (False, "127.0.0.1", 8112)
    assert config.links == ()


def test_rendered_config_and_links(tmp_path: Path) -> None:
    text = render_node_config('Engine "7"', ("relay", "responder"), api_enabled=True)
    text += '\n[[links]]\ntype = "ip"\nlisten = "tcp://127.0.0.1:7000"\n'
    text += '\n[[links]]\ntype = "lora"\nname = "lora-a"\n'
    path = tmp_path / "node.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.node.name == 'Engine "7"' and config.node.roles == ("relay", "responder")
    assert config.api.enabled
    assert [(link.type, link.name) for link in config.links] == [("ip", "ip0"), ("lora", "lora-a")]
    assert config.links[0].listen == "tcp://127.0.0.1:7000" and config.links[0].peers == []
    assert config.links[1].region == "EU_868" and config.links[1].port == 4403


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"the \[node\] section is required"),
        ("[node]\n", r"\[node\] name: is required"),
        ('[node]\nname = ""', r"\[node\] name: must be 1-64 bytes"),
        ("[node]\nname = 5", r"\[node\] name: must be text in quotes, got integer 5"),
        ('[node]\nname = "a"\nroles = "relay"', r"\[node\] roles: must be a list"),
        ('[node]\nname = "a"\nnmae = "b"', r"\[node\] nmae: is not a known key"),
        (
            '[node]\nname = "a"\ncommand_post = "zz"',
            r"\[node\] command_post: must be the command post's node id",
        ),
        (
            '[node]\nname = "a"\n[store]\nquota_mb = 0',
            r"\[store\] quota_mb: must be greater than or equal to 1",
        ),
        (
            '[node]\nname = "a"\n[store]\nquota_mb = true',
            r"\[store\] quota_mb: must be an integer, got boolean",
        ),
        ('[node]\nname = "a"\n[api]\nlisten = "8112"', r"\[api\] listen: must be HOST:PORT"),
        ('[node]\nname = "a"\n[api]\nlisten = "127.0.0.1:99999"', r"\[api\] listen: must be HOST:PORT"),
        (
            '[node]\nname = "a"\n[[links]]\ntype = "carrier-pigeon"',
            r"\[links #1\] type: must be one of ip, lora",
        ),
        ('[node]\nname = "a"\n[[links]]\nname = "x"', r"\[links #1\] type: is required"),
        (
            '[node]\nname = "a"\n[[links]]\ntype = "ip"\npeers = ["tcp://a:1"]\n'
            '[[links]]\ntype = "ip"\nname = "ip0"\npeers = ["tcp://b:1"]',
            "two links are named 'ip0'",
        ),
        ('[node]\nname = "a"\n[[links]]\ntype = "ip"', r"\[link ip0\] give a listen address, peers to dial"),
        (
            '[node]\nname = "a"\n[[links]]\ntype = "ip"\nlisten = "127.0.0.1:7"',
            r"\[link ip0\] listen: must start",
        ),
        (
            '[node]\nname = "a"\n[[links]]\ntype = "ip"\npeers = ["tls+tcp://a:1"]',
            r"\[link ip0\] tls\+tcp://a:1 needs tls = true",
        ),
        (
            '[node]\nname = "a"\n[[links]]\ntype = "lora"\nroster = { 7 = "ab" }',
            r"roster.7: must be a Mesh112 node id",
        ),
        (
            '[node]\nname = "a"\n[[links]]\ntype = "lora"\napp_port = 257',
            r"\[link lora0\] app_port: 257 is ATAK's",
        ),
        (
            '[node]\nname = "a"\n[[links]]\ntype = "lora"\ntransport = "pigeon"',
            r"transport: must be one of tcp, serial",
        ),
        ('links = 3\n[node]\nname = "a"', "must be written as"),
        ('[node]\nname = "a"\n[extra]\n', "unknown section or key 'extra'"),
        ("[node\nname = 'a'", "not valid TOML"),
    ],
)
def test_mistakes_name_file_key_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_binary_and_huge_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.toml")
    (tmp_path / "big.toml").write_bytes(b"#" * 300_000)
    with pytest.raises(ConfigError, match="larger than"):
        load_config(tmp_path / "big.toml")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text, Path("fuzz.toml"))
