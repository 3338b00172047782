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
    text += (
        '\n[[links]]\ntype = "ip"\nlisten = "127.0.0.1:7000"\n\n[[links]]\ntype = "lora"\nname = "lora-a"\n'
    )
    path = tmp_path / "node.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.node.name == 'Engine "7"' and config.node.roles == ("relay", "responder")
    assert config.api.enabled
    assert [(link.type, link.name) for link in config.links] == [("ip", "ip0"), ("lora", "lora-a")]
    assert config.links[0].options == {"listen": "127.0.0.1:7000"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"the \[node\] section is required"),
        ("[node]\n", r"\[node\] name: is required"),
        ('[node]\nname = ""', r"\[node\] name: must be 1-64 bytes"),
        ("[node]\nname = 5", r"\[node\] name: must be a str, got int"),
        ('[node]\nname = "a"\nroles = "relay"', r"\[node\] roles: must be a list"),
        ('[node]\nname = "a"\nnmae = "b"', r"\[node\] nmae: is not a known key"),
        ('[node]\nname = "a"\n[store]\nquota_mb = 0', r"\[store\] quota_mb: must be between"),
        ('[node]\nname = "a"\n[store]\nquota_mb = true', r"\[store\] quota_mb: must be a int, got bool"),
        ('[node]\nname = "a"\n[api]\nlisten = "8112"', r"\[api\] listen: must be HOST:PORT"),
        ('[node]\nname = "a"\n[api]\nlisten = "127.0.0.1:99999"', r"\[api\] listen: must be HOST:PORT"),
        ('[node]\nname = "a"\n[[links]]\ntype = "carrier-pigeon"', r"\[links #1\] type: must be one of"),
        ('[node]\nname = "a"\n[[links]]\nname = "x"', r"\[links #1\] type: is required"),
        (
            '[node]\nname = "a"\n[[links]]\ntype = "ip"\n[[links]]\ntype = "ip"\nname = "ip0"',
            "used by another",
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
    assert str(path) in str(info.value)


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
