"""The link configuration models: strict types, firmware regions and presets, duty cycles."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from meshtastic.protobuf import config_pb2
from pydantic import ValidationError

from relay.config import ConfigProblems, parse_config
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
