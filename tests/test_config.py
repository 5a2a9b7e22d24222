"""Tests for wsserver.config: defaults, the documented file, strict types, layering, validation.

No sockets and no event loop: loading a config is a plain function of a file,
an environment mapping and overrides. Every test passes `env` explicitly so the
developer's own WSSERVER_* variables never leak in.
"""

from pathlib import Path
from typing import Any

import attrs
import pytest

from wsserver.config import (
    ActivationCode,
    ApiKey,
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    default_config_text,
    load_config,
    parse_host_port,
    validate_config,
)

ROOT = Path(__file__).resolve().parent.parent
ROOT_TOML = ROOT / "wsserver.toml"
PACKAGED_TOML = ROOT / "wsserver" / "wsserver.toml"

# The keys of SPEC section 8 (plus max_header_bytes from section 5), with their defaults.
SPEC_DEFAULTS: dict[str, Any] = {
    "server.host": "0.0.0.0",
    "server.port": 8080,
    "server.path": "/ws",
    "server.echo_path": "",
    "server.locale": "zh-CN",
    "server.api_listen": "",
    "server.tls_cert": "",
    "server.tls_key": "",
    "server.fast_io": True,
    "auth.jwt_secret": "",
    "auth.jwt_public_key_file": "",
    "auth.algorithms": ("HS256",),
    "auth.issuer": "",
    "auth.audience": "",
    "auth.timeout": 10.0,
    "auth.expiry_grace": 30.0,
    "auth.require_exp": True,
    "auth.require_user_type": False,
    "auth.max_failures": 10,
    "auth.failure_window": 60.0,
    "heartbeat.interval": 30.0,
    "heartbeat.timeout": 60.0,
    "heartbeat.app_ping": False,
    "limits.max_message_bytes": 65536,
    "limits.messages_per_second": 50.0,
    "limits.burst": 100,
    "limits.max_connections": 10000,
    "limits.max_connections_per_user": 10,
    "limits.per_user_policy": "evict_oldest",
    "limits.max_connections_per_ip": 0,
    "limits.handshake_timeout": 10.0,
    "limits.send_queue": 1024,
    "limits.max_rooms_per_connection": 100,
    "limits.max_room_members": 0,
    "limits.max_http_body_bytes": 1048576,
    "limits.max_header_bytes": 16384,
    "limits.max_json_depth": 32,
    "limits.max_pending": 1000,
    "limits.write_timeout": 30.0,
    "rooms.allow": ("*",),
    "rooms.presence_events": True,
    "rooms.history_limit": 0,
    "messages.dedup_window": 600.0,
    "messages.mailbox_limit": 1000,
    "messages.mailbox_ttl": 604800.0,
    "messages.history_limit": 1000,
    "messages.task_state_ttl": 3600.0,
    "messages.mailbox_max_bytes": 8388608,
    "webhooks.url": "",
    "webhooks.secret": "",
    "webhooks.events": ("user_online", "user_offline", "message_undelivered"),
    "webhooks.undelivered_after": 60.0,
    "webhooks.max_backoff": 60.0,
    "webhooks.max_age": 86400.0,
    "webhooks.max_queue": 100000,
    "webhooks.timeout": 10.0,
    "webhooks.pipeline": 64,
    "crm.timezone": "Asia/Shanghai",
    "crm.offline_on_disconnect": True,
    "crm.dashboard_roles": ("admin", "dashboard"),
    "storage.dir": "./data",
    "storage.fsync": "always",
    "storage.snapshot_interval": 30.0,
    "api.keys": (),
    "security.allowed_origins": (),
    "metrics.require_auth": False,
    "log.level": "info",
    "log.format": "text",
    "cluster.redis_url": "",
    "cluster.node_ttl": 15.0,
    "cluster.heartbeat": 3.0,
    "cluster.prefix": "wsserver",
    "cluster.node_name": "",
    "admin.enabled": True,
    "admin.read_only": False,
}


def get(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wsserver.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, **kwargs: Any) -> Config:
    kwargs.setdefault("env", {})
    return load_config(write(tmp_path, text), **kwargs)


def config_error(tmp_path: Path, text: str, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, **kwargs)
    return info.value


# --- defaults and the documented file --------------------------------------------------


def test_no_file_gives_the_embedded_defaults() -> None:
    assert load_config(env={}) == Config()


def test_empty_file_gives_the_embedded_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == Config()


def test_root_and_packaged_wsserver_toml_are_identical() -> None:
    assert ROOT_TOML.read_bytes() == PACKAGED_TOML.read_bytes()


def test_documented_default_file_loads_to_the_embedded_defaults() -> None:
    assert load_config(ROOT_TOML, env={}) == Config()


def test_default_config_text_is_the_packaged_file() -> None:
    assert default_config_text() == PACKAGED_TOML.read_text(encoding="utf-8")


def test_the_commented_activation_code_example_loads_when_uncommented(tmp_path: Path) -> None:
    lines = []
    for line in default_config_text().splitlines():
        for key in ("[[activation_codes]]", "code =", "group_id =", "name =", "enabled ="):
            if line.startswith(f"# {key}"):
                line = line[2:]
        lines.append(line)
    cfg = load_text(tmp_path, "\n".join(lines))
    assert cfg.activation_codes == (ActivationCode(code="HG66OP88", group_id=1),)


def test_embedded_defaults_pass_validation() -> None:
    validate_config(Config())


@pytest.mark.parametrize("dotted", sorted(SPEC_DEFAULTS))
def test_every_spec_key_exists_with_its_default(dotted: str) -> None:
    value = get(Config(), dotted)
    assert value == SPEC_DEFAULTS[dotted]
    assert type(value) is type(SPEC_DEFAULTS[dotted])


@pytest.mark.parametrize("dotted", sorted(SPEC_DEFAULTS))
def test_every_spec_key_is_documented_in_the_default_file(dotted: str) -> None:
    section, key = dotted.split(".")
    text = default_config_text()
    assert f"\n[{section}]\n" in text
    body = text.split(f"\n[{section}]\n", 1)[1].split("\n[", 1)[0]
    assert f"\n{key} = " in f"\n{body}"
    comment = body.split(f"\n{key} = ", 1)[0].rsplit("\n", 1)[-1]
    assert comment.startswith("# "), f"{dotted} has no comment line above it"


def test_config_has_no_keys_beyond_the_spec() -> None:
    keys = {
        f"{section.name}.{field.name}"
        for section in attrs.fields(Config)
        if isinstance(section.type, type) and attrs.has(section.type)
        for field in attrs.fields(section.type)
    }
    assert keys == set(SPEC_DEFAULTS)


def test_activation_code_defaults() -> None:
    code = ActivationCode(code="HG66OP88", group_id=1)
    assert (code.name, code.enabled) == ("", True)
    assert Config().activation_codes == ()


# --- strict structure: unknown keys and wrong types ------------------------------------


def test_unknown_key_names_its_dotted_path(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[limits]\nsend_queu = 5\n")
    assert err.key == "limits.send_queu"
    assert str(err) == "limits.send_queu: unknown key"


def test_unknown_section_names_it(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[limit]\nsend_queue = 5\n")
    assert err.key == "limit"
    assert "unknown section" in str(err)


def test_unknown_key_in_an_activation_code_names_its_index(tmp_path: Path) -> None:
    text = '[[activation_codes]]\ncode = "A"\ngroup_id = 1\ngroup = 2\n'
    assert config_error(tmp_path, text).key == "activation_codes[0].group"


def test_string_for_int_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[limits]\nsend_queue = "5"\n')
    assert err.key == "limits.send_queue"
    assert str(err) == "limits.send_queue: expected int, got str"


def test_float_for_int_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[server]\nport = 8080.0\n")
    assert str(err) == "server.port: expected int, got float"


def test_int_for_bool_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[heartbeat]\napp_ping = 1\n")
    assert str(err) == "heartbeat.app_ping: expected bool, got int"


def test_bool_for_int_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[limits]\nburst = true\n")
    assert str(err) == "limits.burst: expected int, got bool"


def test_string_for_float_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[auth]\ntimeout = "10"\n')
    assert str(err) == "auth.timeout: expected float, got str"


def test_int_for_str_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[server]\nhost = 0\n")
    assert str(err) == "server.host: expected str, got int"


def test_infinite_duration_is_rejected(tmp_path: Path) -> None:
    assert config_error(tmp_path, "[heartbeat]\ninterval = inf\n").key == "heartbeat.interval"


def test_int_is_accepted_for_a_float_and_becomes_a_float(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[heartbeat]\ninterval = 5\ntimeout = 0.5\n")
    assert cfg.heartbeat.interval == 5.0
    assert type(cfg.heartbeat.interval) is float
    assert cfg.heartbeat.timeout == 0.5


def test_string_for_a_list_is_rejected_not_split_into_characters(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[rooms]\nallow = "abc"\n')
    assert str(err) == "rooms.allow: expected array, got str"


def test_wrong_list_element_names_its_index(tmp_path: Path) -> None:
    err = config_error(tmp_path, '[api]\nkeys = ["k1", 2]\n')
    assert str(err) == "api.keys[1]: expected str, got int"


def test_api_keys_may_be_strings_or_named_tables(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, '''
[api]
keys = ["plain-key-1", {name = "crm-reader", key = "reader-key-2", read_only = true}]
''')
    assert cfg.api.keys[0] == "plain-key-1"
    assert cfg.api.named() == (
        ApiKey(name="api.keys[0]", key="plain-key-1"),
        ApiKey(name="crm-reader", key="reader-key-2", read_only=True),
    )
    tables = load_text(tmp_path, '[[api.keys]]\nname = "ops"\nkey = "k3"\n')
    assert tables.api.named() == (ApiKey(name="ops", key="k3", read_only=False),)
    scoped = load_text(tmp_path, '[[api.keys]]\nname = "acme"\nkey = "k4"\ngroups = [7, "acme"]\n')
    assert scoped.api.named() == (ApiKey(name="acme", key="k4", groups=(7, "acme")),)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[api.keys]]\nname = "a"\nkey = ""\n', "api.keys[0].key"),
        ('[[api.keys]]\nname = " "\nkey = "k"\n', "api.keys[0].name"),
        ('[[api.keys]]\nkey = "k"\n', "api.keys[0].name"),
        ('[[api.keys]]\nname = "a"\nkey = "k"\nread_only = "yes"\n', "api.keys[0].read_only"),
        ('[[api.keys]]\nname = "a"\nkey = "k"\ngroups = [7, ""]\n', "api.keys[0].groups[1]"),
        ('[[api.keys]]\nname = "a"\nkey = "k"\ngroups = [true]\n', "api.keys[0].groups[0]"),
        ('[[api.keys]]\nname = "a"\nkey = "k"\ngroups = 7\n', "api.keys[0].groups"),
        ('[[api.keys]]\nname = "a"\nkey = "k"\n[[api.keys]]\nname = "a"\nkey = "j"\n', "api.keys[1].name"),
    ],
)
def test_a_bad_named_api_key_is_refused_naming_its_field(tmp_path: Path, text: str, key: str) -> None:
    assert config_error(tmp_path, text).key == key


def test_section_that_is_not_a_table_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, "server = 5\n")
    assert str(err) == "server: expected table, got int"


def test_activation_code_errors_name_the_entry(tmp_path: Path) -> None:
    text = (
        '[[activation_codes]]\ncode = "A"\ngroup_id = 1\n'
        "[[activation_codes]]\ncode = 7\ngroup_id = 1\n"
    )
    err = config_error(tmp_path, text)
    assert err.key == "activation_codes[1].code"
    assert str(err) == "activation_codes[1].code: expected str, got int"


def test_activation_code_without_code_is_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[[activation_codes]]\ngroup_id = 1\n")
    assert err.key == "activation_codes[0].code"
    assert "missing" in err.message


def test_activation_code_group_id_may_be_int_or_string_but_not_bool(tmp_path: Path) -> None:
    text = (
        '[[activation_codes]]\ncode = "A"\ngroup_id = 1\n'
        '[[activation_codes]]\ncode = "B"\ngroup_id = "g-2"\nname = "shop"\nenabled = false\n'
    )
    assert load_text(tmp_path, text).activation_codes == (
        ActivationCode(code="A", group_id=1),
        ActivationCode(code="B", group_id="g-2", name="shop", enabled=False),
    )
    err = config_error(tmp_path, '[[activation_codes]]\ncode = "A"\ngroup_id = true\n')
    assert str(err) == "activation_codes[0].group_id: expected int or str, got bool"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    err = config_error(tmp_path, "[server\n")
    assert err.key == str(tmp_path / "wsserver.toml")
    assert "invalid TOML" in err.message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert info.value.key == str(missing)


def test_utf8_bom_written_by_windows_notepad_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[server]\nport = 9000\n")
    assert load_config(path, env={}).server.port == 9000


def test_config_error_is_an_exception_with_key_and_message() -> None:
    err = ConfigError("limits.send_queue", "expected int, got str")
    assert isinstance(err, Exception)
    assert (err.key, err.message) == ("limits.send_queue", "expected int, got str")
    assert str(err) == "limits.send_queue: expected int, got str"


# --- environment variables -------------------------------------------------------------


def test_env_overrides_an_int() -> None:
    cfg = load_config(env={"WSSERVER_LIMITS_SEND_QUEUE": "5"})
    assert cfg.limits.send_queue == 5


def test_env_overrides_a_float() -> None:
    cfg = load_config(env={"WSSERVER_HEARTBEAT_INTERVAL": "2.5", "WSSERVER_AUTH_TIMEOUT": "3"})
    assert (cfg.heartbeat.interval, cfg.auth.timeout) == (2.5, 3.0)


def test_env_overrides_a_bool() -> None:
    assert load_config(env={"WSSERVER_HEARTBEAT_APP_PING": "true"}).heartbeat.app_ping is True


def test_env_overrides_a_string_given_bare_or_quoted() -> None:
    assert load_config(env={"WSSERVER_SERVER_HOST": "127.0.0.1"}).server.host == "127.0.0.1"
    assert load_config(env={"WSSERVER_LOG_LEVEL": '"debug"'}).log.level == "debug"


def test_env_string_key_keeps_text_that_looks_like_another_type() -> None:
    cfg = load_config(env={"WSSERVER_AUTH_JWT_SECRET": "123456"})
    assert cfg.auth.jwt_secret == "123456"


def test_env_overrides_a_list() -> None:
    cfg = load_config(env={"WSSERVER_API_KEYS": '["k1", "k2"]'})
    assert cfg.api.keys == ("k1", "k2")


def test_env_sets_activation_codes_as_a_toml_array() -> None:
    cfg = load_config(env={"WSSERVER_ACTIVATION_CODES": '[{code = "X1", group_id = 3}]'})
    assert cfg.activation_codes == (ActivationCode(code="X1", group_id=3),)


def test_env_wrong_type_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"WSSERVER_LIMITS_SEND_QUEUE": "lots"})
    assert info.value.key == "limits.send_queue"
    assert str(info.value) == (
        "limits.send_queue: expected int, got str (from WSSERVER_LIMITS_SEND_QUEUE)"
    )


def test_unknown_wsserver_env_var_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"WSSERVER_LIMITS_SEND_QUEU": "5"})
    assert info.value.key == "WSSERVER_LIMITS_SEND_QUEU"


def test_wsserver_config_and_other_variables_are_ignored() -> None:
    env = {"WSSERVER_CONFIG": "/etc/wsserver.toml", "PATH": "/bin", "WSSERVERX": "1"}
    assert load_config(env=env) == Config()


def test_env_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSSERVER_SERVER_PORT", "9100")
    assert load_config().server.port == 9100


# --- precedence ------------------------------------------------------------------------


def test_env_wins_over_file(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[server]\nport = 1111\n", env={"WSSERVER_SERVER_PORT": "2222"})
    assert cfg.server.port == 2222


def test_overrides_win_over_env_and_file(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        '[server]\nport = 1111\n[storage]\ndir = "/file"\n',
        env={"WSSERVER_SERVER_PORT": "2222", "WSSERVER_STORAGE_DIR": "/env"},
        overrides={"server.port": 0, "storage.dir": "/flag"},
    )
    assert (cfg.server.port, cfg.storage.dir) == (0, "/flag")


def test_file_keys_not_overridden_are_kept(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path, '[server]\nport = 1111\nhost = "10.0.0.1"\n', overrides={"server.port": 0}
    )
    assert (cfg.server.host, cfg.server.port) == ("10.0.0.1", 0)


def test_unknown_override_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"server.prot": 1})
    assert info.value.key == "server.prot"


def test_override_with_wrong_type_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"server.port": "80"})
    assert str(info.value) == "server.port: expected int, got str"


# --- validation ------------------------------------------------------------------------


def invalid(overrides: dict[str, object]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides=overrides)
    return info.value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("storage.fsync", "sometimes"),
        ("limits.per_user_policy", "evict_newest"),
        ("log.format", "xml"),
        ("log.level", "verbose"),
        ("log.level", "INFO"),
        ("server.locale", "fr"),
    ],
)
def test_enum_values_outside_their_set_are_rejected(key: str, value: str) -> None:
    err = invalid({key: value})
    assert err.key == key
    assert "must be one of" in err.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("storage.fsync", "interval"),
        ("storage.fsync", "never"),
        ("limits.per_user_policy", "reject"),
        ("log.format", "json"),
        ("log.level", "debug"),
        ("server.locale", "en"),
    ],
)
def test_enum_values_inside_their_set_are_accepted(key: str, value: str) -> None:
    cfg = load_config(env={}, overrides={key: value})
    assert get(cfg, key) == value


@pytest.mark.parametrize("algorithm", ["none", "None", "NONE"])
def test_alg_none_is_never_accepted(algorithm: str) -> None:
    err = invalid({"auth.algorithms": ["HS256", algorithm]})
    assert err.key == "auth.algorithms[1]"
    assert "never" in err.message


def test_unsupported_algorithm_is_rejected() -> None:
    assert invalid({"auth.algorithms": ["HS1"]}).key == "auth.algorithms[0]"


def test_empty_algorithm_list_is_rejected() -> None:
    assert invalid({"auth.algorithms": []}).key == "auth.algorithms"


def test_public_key_algorithms_need_a_public_key_file() -> None:
    assert invalid({"auth.algorithms": ["RS256"]}).key == "auth.jwt_public_key_file"
    cfg = load_config(
        env={}, overrides={"auth.algorithms": ["RS256", "ES256"], "auth.jwt_public_key_file": "k"}
    )
    assert cfg.auth.algorithms == ("RS256", "ES256")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server.port", -1),
        ("server.port", 65536),
        ("limits.send_queue", 0),
        ("limits.burst", 0),
        ("limits.messages_per_second", 0),
        ("limits.max_message_bytes", 0),
        ("limits.max_connections", 0),
        ("limits.max_connections_per_user", 0),
        ("limits.max_connections_per_ip", -1),
        ("limits.max_room_members", -1),
        ("limits.max_rooms_per_connection", 0),
        ("limits.handshake_timeout", 0),
        ("limits.max_http_body_bytes", 0),
        ("limits.max_header_bytes", 0),
        ("auth.timeout", 0),
        ("auth.expiry_grace", -1),
        ("heartbeat.interval", 0),
        ("heartbeat.timeout", 0),
        ("heartbeat.timeout", -5.0),
        ("messages.dedup_window", -1),
        ("messages.mailbox_limit", -1),
        ("messages.mailbox_ttl", 0),
        ("messages.history_limit", -1),
        ("messages.task_state_ttl", -1),
        ("webhooks.undelivered_after", 0),
        ("webhooks.max_backoff", 0),
        ("webhooks.max_age", 0),
        ("webhooks.max_queue", 0),
        ("webhooks.timeout", 0),
        ("storage.snapshot_interval", 0),
        ("cluster.node_ttl", 0),
    ],
)
def test_out_of_range_numbers_are_rejected(key: str, value: float) -> None:
    assert invalid({key: value}).key == key


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server.port", 0),
        ("server.port", 65535),
        ("limits.max_connections_per_ip", 0),
        ("limits.max_room_members", 0),
        ("messages.dedup_window", 0),
        ("auth.expiry_grace", 0),
        ("heartbeat.timeout", 0.001),
    ],
)
def test_boundary_numbers_are_accepted(key: str, value: float) -> None:
    assert get(load_config(env={}, overrides={key: value}), key) == value


def test_tls_cert_without_key_is_rejected() -> None:
    assert invalid({"server.tls_cert": "cert.pem"}).key == "server.tls_key"


def test_tls_key_without_cert_is_rejected() -> None:
    assert invalid({"server.tls_key": "key.pem"}).key == "server.tls_cert"


def test_tls_cert_and_key_together_are_accepted() -> None:
    overrides = {"server.tls_cert": "cert.pem", "server.tls_key": "key.pem"}
    assert load_config(env={}, overrides=overrides).server.tls_key == "key.pem"


@pytest.mark.parametrize("value", ["8081", "127.0.0.1", "127.0.0.1:", ":8081", "h:99999", "h:x"])
def test_api_listen_must_be_host_port(value: str) -> None:
    assert invalid({"server.api_listen": value}).key == "server.api_listen"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:8081", ("127.0.0.1", 8081)), ("[::1]:0", ("::1", 0)), ("api:80", ("api", 80))],
)
def test_api_listen_host_port_is_accepted_and_parsed(value: str, expected: tuple[str, int]) -> None:
    assert load_config(env={}, overrides={"server.api_listen": value}).server.api_listen == value
    assert parse_host_port(value) == expected


def test_duplicate_activation_codes_are_rejected() -> None:
    codes = [{"code": "A", "group_id": 1}, {"code": "A", "group_id": 2}]
    err = invalid({"activation_codes": codes})
    assert err.key == "activation_codes[1].code"
    assert "duplicate" in err.message


@pytest.mark.parametrize("code", ["", "  "])
def test_empty_activation_code_is_rejected(code: str) -> None:
    assert invalid({"activation_codes": [{"code": code, "group_id": 1}]}).key == (
        "activation_codes[0].code"
    )


def test_empty_room_pattern_is_rejected() -> None:
    assert invalid({"rooms.allow": ["chat:*", ""]}).key == "rooms.allow[1]"


def test_empty_room_allow_list_is_accepted() -> None:
    assert load_config(env={}, overrides={"rooms.allow": []}).rooms.allow == ()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server.path", "ws"),
        ("server.echo_path", "echo"),
        ("server.echo_path", "/ws"),
        ("webhooks.url", "ftp://example.com/hook"),
        ("webhooks.events", ["user_online", "user_deleted"]),
        ("crm.timezone", "Mars/Olympus_Mons"),
        ("storage.dir", ""),
        ("cluster.redis_url", "localhost:6379"),
        ("cluster.heartbeat", 15.0),
        ("cluster.prefix", ""),
        ("cluster.prefix", "my hub"),
        ("api.keys", [""]),
        ("security.allowed_origins", [""]),
    ],
)
def test_other_invalid_values_are_rejected(key: str, value: object) -> None:
    assert invalid({key: value}).key.startswith(key)


def test_validate_config_checks_a_hand_built_config() -> None:
    cfg = attrs.evolve(Config(), storage=attrs.evolve(Config().storage, fsync="bogus"))
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert info.value.key == "storage.fsync"


# --- round trip ------------------------------------------------------------------------


def test_config_to_dict_uses_plain_lists_and_round_trips() -> None:
    cfg = load_config(
        env={},
        overrides={
            "activation_codes": [{"code": "A", "group_id": "g1", "name": "n", "enabled": False}],
            "api.keys": ["k"],
        },
    )
    data = config_to_dict(cfg)
    assert data["auth"]["algorithms"] == ["HS256"]
    assert data["activation_codes"] == [
        {"code": "A", "group_id": "g1", "name": "n", "enabled": False}
    ]
    assert config_from_dict(data) == cfg


def test_config_from_dict_validates() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"limits": {"send_queue": 0}})
    assert info.value.key == "limits.send_queue"
