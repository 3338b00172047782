"""The link configuration models: strict types, firmware regions and presets, duty cycles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from meshtastic.protobuf import config_pb2
from pydantic import ValidationError

from field.processes import node_config
from field.radio import Radio, lora_link_toml
from relay.config import ConfigProblems, json_schema, parse_config
from relay.links.ip import IpLinkConfig
from relay.links.lora_config import LoRaLinkConfig
from relay.links.lora_phy import PRESETS, REGION_DUTY_CYCLE, Preset, Region, duty_cycle

ID = "ab" * 16


def test_regions_and_presets_are_the_firmware_enum_names() -> None:
    lora = config_pb2.Config.LoRaConfig
    assert set(get_args(Region)) <= set(lora.RegionCode.keys()) - {"UNSET"}
    assert set(get_args(Preset)) <= set(lora.ModemPreset.keys()) - {"VERY_LONG_SLOW"}
    assert set(get_args(Preset)) == set(PRESETS)
    assert set(get_args(Region)) == set(REGION_DUTY_CYCLE)
    assert {"EU_866", "EU_N_868", "BR_902", "LORA_24"} <= set(get_args(Region))


def test_duty_cycles_from_the_firmware_region_table() -> None:
    assert duty_cycle("EU_866") == 0.025
    assert duty_cycle("EU_868") == 0.10 and duty_cycle("UA_868") == 0.01 and duty_cycle("US") == 1.0
    with pytest.raises(ValueError, match="unknown LoRa region 'EU_999'"):
        duty_cycle("EU_999")
    with pytest.raises(ValueError, match="unknown LoRa region 'UNSET'"):
        duty_cycle("UNSET")


def test_lora_model_refuses_wrong_types_and_unknown_names() -> None:
    assert LoRaLinkConfig(roster={5: ID}).roster == {5: ID}
    assert LoRaLinkConfig.model_validate({"roster": {"5": ID}}).roster == {5: ID}  # TOML keys are text
    for options, key in [
        ({"app_port": "300"}, "app_port"),
        ({"port": "4403"}, "port"),
        ({"port": True}, "port"),
        ({"app_port": 1}, "app_port"),
        ({"app_port": 257}, "app_port"),
        ({"region": "EU_999"}, "region"),
        ({"region": "eu_868"}, "region"),
        ({"preset": "VERY_LONG_SLOW"}, "preset"),
        ({"transport": "carrier-pigeon"}, "transport"),
        ({"roster": {5: "abcd"}}, "roster"),
        ({"roster": {0: ID}}, "roster"),
        ({"ack_timeout_s": 0}, "ack_timeout_s"),
        ({"regoin": "EU_868"}, "regoin"),
    ]:
        with pytest.raises(ValidationError) as info:
            LoRaLinkConfig.model_validate(options)
        assert info.value.errors()[0]["loc"][0] == key, options


def test_ip_model_checks_addresses_and_timing() -> None:
    assert IpLinkConfig(peers=("tcp://127.0.0.1:7001",), keepalive_interval=1).keepalive_interval == 1.0
    for options, message in [
        ({"peers": ("127.0.0.1:7001",)}, "must start with tcp://"),
        ({}, "give a listen address"),
        ({"peers": ("tls+tcp://127.0.0.1:7001",)}, "needs TLS material"),
        ({"listen": "tcp://127.0.0.1:7001", "bitrate": 0}, "greater than 0"),
        ({"listen": "tcp://127.0.0.1:7001", "queue_limit_bytes": 10}, "greater than or equal"),
        ({"listen": "tcp://127.0.0.1:7001", "keepalive_misses": "3"}, "valid integer"),
    ]:
        with pytest.raises(ValidationError, match=message):
            IpLinkConfig.model_validate(options)


def test_every_problem_is_reported_at_once() -> None:
    text = (
        '[node]\nname = "a"\n[store]\nquota_mb = "9"\n'
        '[[links]]\ntype = "lora"\napp_port = "300"\nport = "4403"\nregion = "EU_999"\n'
        'preset = "FAST"\ncolour = "red"\n'
    )
    with pytest.raises(ConfigProblems) as info:
        parse_config(text, Path("/etc/mesh112/node.toml"))
    unquote = "(write numbers without quotes)"
    assert [line.removeprefix("/etc/mesh112/node.toml: ") for line in info.value.problems] == [
        f"[store] quota_mb: must be an integer, got text '9' {unquote}",
        f"[link lora0] port: must be an integer, got text '4403' {unquote}",
        f"[link lora0] preset: must be one of SHORT_TURBO, {', '.join(list(PRESETS)[1:-1])} or NARROW_SLOW,"
        " got 'FAST'",
        f"[link lora0] region: must be one of US, {', '.join(list(REGION_DUTY_CYCLE)[1:-1])} or EU_N_868,"
        " got 'EU_999'",
        f"[link lora0] app_port: must be an integer, got text '300' {unquote}",
        "[link lora0] colour: is not a known key (check the spelling)",
    ]
    assert str(info.value) == (
        f"/etc/mesh112/node.toml: [store] quota_mb: must be an integer, got text '9' {unquote}"
        " (and 5 more: `mesh112 config check /etc/mesh112/node.toml` lists them all)"
    )


def test_data_dir_defaults_to_the_systemd_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.toml"
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert parse_config('[node]\nname = "a"', path).node.data_dir == tmp_path
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/mesh112")
    assert parse_config('[node]\nname = "a"', path).node.data_dir == Path("/var/lib/mesh112")
    assert parse_config('[node]\nname = "a"\ndata_dir = "d"', path).node.data_dir == tmp_path / "d"
    assert parse_config('[node]\nname = "a"\ndata_dir = "/srv/n"', path).node.data_dir == Path("/srv/n")


REPO = Path(__file__).resolve().parents[1]
MESH112 = str(Path(sys.executable).parent / "mesh112")  # the running venv's console script
LORA_TABLE = '[node]\nname = "n"\n\n[[links]]\ntype = "lora"\n{line}\n'
MISTAKES = [
    (
        'app_port = "300"',
        "[link lora0] app_port: must be an integer, got text '300' (write numbers without quotes)",
    ),
    (
        'port = "4403"',
        "[link lora0] port: must be an integer, got text '4403' (write numbers without quotes)",
    ),
    ('region = "EU_999"', "[link lora0] region: must be one of US, EU_433, EU_868, "),
    ('preset = "LONG_FASTEST"', "[link lora0] preset: must be one of SHORT_TURBO, "),
    ('regoin = "EU_868"', "[link lora0] regoin: is not a known key (check the spelling)"),
]


@pytest.mark.parametrize(("line", "expected"), MISTAKES)
def test_each_mistake_is_one_line_without_traceback(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(LORA_TABLE.format(line=line))
    for command, prefix in (
        ([MESH112, "config", "check", str(path)], f"{path}: "),
        ([MESH112, "relay", "run", "--config", str(path)], f"mesh112: {path}: "),
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (command, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(prefix + expected), done.stderr
        assert done.stdout == ""
    if "region" in line:
        assert "or EU_N_868, got 'EU_999'" in done.stderr


def test_config_check_lists_every_problem_and_passes_good_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(LORA_TABLE.format(line='app_port = "300"\nport = "4403"\nregion = "EU_999"'))
    done = subprocess.run([MESH112, "config", "check", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 3, done.stderr
    good = tmp_path / "good.toml"
    good.write_text(
        LORA_TABLE.format(line='region = "EU_866"\npreset = "LITE_FAST"\n[links.roster]\n5 = "' + ID + '"')
    )
    done = subprocess.run([MESH112, "config", "check", str(good)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{good}: ok\n", "")
    link = parse_config(good.read_text(), good).links[0]
    assert isinstance(link, LoRaLinkConfig) and duty_cycle(link.region) == 0.025  # EU_866: 2.5 %


def test_the_files_users_have_still_load(tmp_path: Path) -> None:
    """The packaged example (its link examples uncommented) and what the demo writes."""
    example = (REPO / "deploy" / "node.example.toml").read_text()
    links = example[example.index("# [[links]]") :]
    uncommented = "\n".join(line.removeprefix("# ") for line in links.splitlines())
    config = parse_config(example + uncommented, tmp_path / "node.toml")
    assert [link.type for link in config.links] == ["ip", "lora"]
    demo = node_config("Relay 1", ("relay",), 8113, 7001, [7000], command_post=bytes(16))
    demo += lora_link_toml(Radio("relay-1", 0xA1, 0.0, 4403), {0xA2: bytes(range(16))})
    config = parse_config(demo, tmp_path / "node.toml")
    assert [(link.type, link.name) for link in config.links] == [("ip", "ip0"), ("lora", "lora0")]


def test_shipped_schema_is_what_the_models_generate() -> None:
    shipped = (REPO / "deploy" / "node.schema.json").read_text()
    generated = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    assert shipped == generated, "regenerate: mesh112 config schema > deploy/node.schema.json"
    done = subprocess.run([MESH112, "config", "schema"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == shipped
