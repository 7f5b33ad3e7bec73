"""Configuration: env over toml over defaults; every bad value is one clear ConfigError naming the key."""

from __future__ import annotations

import json

import pytest

from comfy_nodes.config import ConfigError, check_token, load_config

KEY = "rq:rq}J!6u)0R4wqS{T$cW*1Qzy%g#x(+DXkLE.c"  # 40 Z85 characters


def test_defaults_follow_comfyui_folders(tmp_path):
    cfg = load_config(
        {},
        user_dir=str(tmp_path / "user"),
        output_dir=str(tmp_path / "out"),
        comfy_url="http://127.0.0.1:8200",
        toml_path=None,
    )
    assert cfg.role == "both" and cfg.runs_host and cfg.runs_worker
    assert cfg.data_dir == str(tmp_path / "user" / "comfymq")
    assert cfg.artifact_root == str(tmp_path / "out" / "comfymq")
    assert cfg.comfy_url == "http://127.0.0.1:8200"
    assert cfg.broker_bind == "tcp://127.0.0.1:5557" and cfg.token is None and cfg.source == "defaults"


def test_env_overrides_toml(tmp_path):
    toml = tmp_path / "comfymq.toml"
    toml.write_text('role = "host"\nheartbeat = 2.5\nallowed_worker_keys = ["%s"]\ntoken = "from-toml-123"\n' % KEY)
    cfg = load_config(
        {"COMFYMQ_TOKEN": "from-env-456", "COMFYMQ_ALLOW_PLAINTEXT": "yes"}, toml_path=toml, user_dir=str(tmp_path)
    )
    assert cfg.role == "host" and not cfg.runs_worker
    assert cfg.heartbeat == 2.5 and cfg.allowed_worker_keys == [KEY]
    assert cfg.token == "from-env-456" and cfg.allow_plaintext is True
    assert str(toml) in cfg.source and "environment" in cfg.source


def test_the_input_cache_bound_defaults_to_20_gib_and_zero_keeps_none(tmp_path):
    assert load_config({}, user_dir=str(tmp_path)).input_cache_bytes == 20 << 30
    assert load_config({"COMFYMQ_INPUT_CACHE_BYTES": "0"}, user_dir=str(tmp_path)).input_cache_bytes == 0


def test_toml_found_in_the_user_dir_and_a_comfymq_table(tmp_path):
    (tmp_path / "comfymq.toml").write_text('[comfymq]\nrole = "worker"\nbroker = "tcp://10.0.0.5:5557"\n')
    cfg = load_config({}, user_dir=str(tmp_path))
    assert cfg.role == "worker" and cfg.broker == "tcp://10.0.0.5:5557"


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"COMFYMQ_ROLE": "boss"}, "role must be one of"),
        ({"COMFYMQ_HEARTBEAT": "fast"}, "COMFYMQ_HEARTBEAT"),
        ({"COMFYMQ_HEARTBEAT": "0"}, "heartbeat must be"),
        ({"COMFYMQ_BROKER": "10.0.0.5:5557"}, "broker must be a ZeroMQ endpoint"),
        ({"COMFYMQ_CURVE_SECRET_KEY": "short"}, "curve_secret_key must be a 40-character"),
        ({"COMFYMQ_ALLOWED_WORKER_KEYS": f"{KEY},nope"}, "'nope' is not"),
        ({"COMFYMQ_WORKER_PUBLIC_KEY": KEY}, "go together"),
        ({"COMFYMQ_CAPACITY": "0"}, "capacity must be"),
        ({"COMFYMQ_CAPACITY": "1.5"}, "COMFYMQ_CAPACITY"),
        ({"COMFYMQ_COMFY_URL": "localhost:8188"}, "comfy_url must be"),
        ({"COMFYMQ_TOKEN": "abc"}, "at least 8"),
        ({"COMFYMQ_ALLOW_PLAINTEXT": "maybe"}, "true/false"),
        ({"COMFYMQ_WORKER_ID": "has space"}, "worker_id may hold"),
        ({"COMFYMQ_CONFIG": "/nonexistent/comfymq.toml"}, "not a file"),
    ],
)
def test_bad_values_are_one_clear_error(tmp_path, env, needle):
    with pytest.raises(ConfigError) as e:
        load_config(env, user_dir=str(tmp_path))
    assert needle in str(e.value)


def test_bad_toml_names_the_file_and_key(tmp_path):
    bad = tmp_path / "a.toml"
    bad.write_text("role = \n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({}, toml_path=bad)
    bad.write_text('rol = "host"\n')
    with pytest.raises(ConfigError, match="unknown key 'rol'"):
        load_config({}, toml_path=bad)
    bad.write_text("heartbeat = true\n")
    with pytest.raises(ConfigError, match="heartbeat"):
        load_config({}, toml_path=bad)


# ---- the one token rule (config.check_token), and the HTTP keys --------------------------------------------


@pytest.mark.parametrize(
    "token, needle",
    [
        ("a", "at least 8"),
        ("short77", "7 characters"),
        ("two words", "position 4"),
        ("tab\there!", "position 4"),
        ("caf\u00e9-token", "position 4"),
        ("x" * 1025, "1025 characters"),
    ],
)
def test_a_bad_token_is_refused_in_env_and_toml_alike(tmp_path, token, needle):
    with pytest.raises(ConfigError) as e:
        load_config({"COMFYMQ_TOKEN": token}, user_dir=str(tmp_path))
    assert "token" in str(e.value) and needle in str(e.value) and "visible ASCII" in str(e.value)
    assert token not in str(e.value) or len(token) < 2  # the rule, never the token itself
    toml = tmp_path / "comfymq.toml"
    toml.write_text(f"token = {json.dumps(token)}\n")
    with pytest.raises(ConfigError, match="visible ASCII"):
        load_config({}, toml_path=toml)


def test_token_rule_details():
    assert check_token(None) is None and check_token("") is None and check_token("   ") is None
    assert check_token("  padded-token \n") == "padded-token"
    assert check_token("!#$%&()*+,-./:;<=>?@[]^_`{|}~") == "!#$%&()*+,-./:;<=>?@[]^_`{|}~"
    with pytest.raises(ValueError, match="got a int"):
        check_token(12345678)


def test_http_keys_from_env_and_toml(tmp_path):
    toml = tmp_path / "comfymq.toml"
    toml.write_text('allowed_hosts = ["comfy.lan", "192.168.1.5"]\nmax_jobs_per_request = 500\nhttp_read_timeout = 5\n')
    cfg = load_config(
        {
            "COMFYMQ_ALLOWED_ORIGINS": "https://a.example, http://b.example:8080",
            "COMFYMQ_MAX_STORED_BYTES_PER_REQUEST": "1048576",
        },
        toml_path=toml,
    )
    assert cfg.allowed_hosts == ["comfy.lan", "192.168.1.5"]
    assert cfg.allowed_origins == ["https://a.example", "http://b.example:8080"]
    assert (cfg.max_jobs_per_request, cfg.max_stored_bytes_per_request, cfg.http_read_timeout) == (500, 1 << 20, 5.0)
    assert cfg.max_body_bytes == 64 << 20 and cfg.http_body_timeout == 300.0
    defaults = load_config({}, user_dir=str(tmp_path / "none"))
    assert defaults.allowed_hosts == [] and defaults.max_jobs_per_request == 10000


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"COMFYMQ_ALLOWED_HOSTS": "http://comfy.lan"}, "allowed_hosts"),
        ({"COMFYMQ_ALLOWED_HOSTS": "comfy.lan:8188"}, "allowed_hosts"),
        ({"COMFYMQ_ALLOWED_ORIGINS": "comfy.lan"}, "allowed_origins"),
        ({"COMFYMQ_MAX_JOBS_PER_REQUEST": "0"}, "max_jobs_per_request"),
        ({"COMFYMQ_MAX_BODY_BYTES": "12"}, "max_body_bytes"),
        ({"COMFYMQ_HTTP_READ_TIMEOUT": "0"}, "http_read_timeout"),
        ({"COMFYMQ_HTTP_BODY_TIMEOUT": "nan"}, "http_body_timeout"),
    ],
)
def test_bad_http_values_are_one_clear_error(tmp_path, env, needle):
    with pytest.raises(ConfigError) as e:
        load_config(env, user_dir=str(tmp_path))
    assert needle in str(e.value)


# ---- every bad value names where it came from --------------------------------------------------------------

# (key, its bad value in comfymq.toml, the same in the environment, a piece of the message)
BAD_VALUES = [
    ("role", '"wrker"', "wrker", "role must be one of both, host, worker, got 'wrker'"),
    ("broker_bind", '"nowhere"', "nowhere", "broker_bind must be a ZeroMQ endpoint"),
    ("broker", '"10.0.0.5:5557"', "10.0.0.5:5557", "broker must be a ZeroMQ endpoint"),
    ("curve_secret_key", '"short"', "short", "curve_secret_key must be a 40-character"),
    ("allowed_worker_keys", '["nope"]', "nope", "'nope' is not"),
    ("heartbeat", "0", "0", "heartbeat must be"),
    ("heartbeat", "true", "fast", "heartbeat: "),  # not a number: _coerce
    ("max_run_time", "-1", "-1", "max_run_time must be"),
    ("capacity", "0", "0", "capacity must be"),
    ("input_cache_bytes", "-1", "-1", "input_cache_bytes must be"),
    ("retention_days", "-1", "-1", "retention_days must be"),
    ("comfy_url", '"localhost:8188"', "localhost:8188", "comfy_url must be"),
    ("token", '"abc"', "abc", "at least 8"),
    ("max_body_bytes", "12", "12", "max_body_bytes must be"),
    ("max_jobs_per_request", "0", "0", "max_jobs_per_request must be"),
    ("http_read_timeout", "0", "0", "http_read_timeout must be"),
    ("http_body_timeout", "nan", "nan", "http_body_timeout must be"),
    ("allowed_hosts", '["http://comfy.lan"]', "http://comfy.lan", "allowed_hosts"),
    ("allowed_origins", '["comfy.lan"]', "comfy.lan", "allowed_origins"),
    ("worker_id", '"has space"', "has space", "worker_id may hold"),
    ("save_roots", '["relative"]', "relative", "save_roots: 'relative' is not an absolute path"),
]


@pytest.mark.parametrize("key, in_toml, in_env, needle", BAD_VALUES, ids=lambda v: v if isinstance(v, str) else "")
def test_a_bad_value_names_the_file_or_the_variable_it_came_from(tmp_path, key, in_toml, in_env, needle):
    toml = tmp_path / "comfymq.toml"
    toml.write_text(f"{key} = {in_toml}\n")
    with pytest.raises(ConfigError) as e:
        load_config({}, toml_path=toml)
    assert needle in str(e.value) and str(e.value).endswith(f"(in {toml})"), str(e.value)
    variable = "COMFYMQ_" + key.upper()
    for where in ({}, {"toml_path": toml}):  # a variable overrides the file: then the variable is named
        toml.write_text(f"{key} = {in_toml}\n" if not where else "role = 'host'\n")
        with pytest.raises(ConfigError) as e:
            load_config({variable: in_env}, user_dir=str(tmp_path / "none"), **where)
        assert needle in str(e.value) and str(e.value).endswith(f"(from {variable})"), str(e.value)
        assert str(toml) not in str(e.value)


def test_the_documented_example_of_a_bad_role(tmp_path):
    toml = tmp_path / "comfymq.toml"
    toml.write_text('[comfymq]\nrole = "wrker"\n')
    with pytest.raises(ConfigError) as e:
        load_config({}, user_dir=str(tmp_path))
    assert str(e.value) == f"role must be one of both, host, worker, got 'wrker' (in {toml})"


def test_an_error_about_two_keys_names_both_sources(tmp_path):
    toml = tmp_path / "comfymq.toml"
    toml.write_text(f'worker_secret_key = "{KEY}"\n')
    with pytest.raises(ConfigError) as e:
        load_config({"COMFYMQ_WORKER_PUBLIC_KEY": KEY, "COMFYMQ_WORKER_SECRET_KEY": ""}, toml_path=toml)
    assert str(e.value).endswith("(from COMFYMQ_WORKER_PUBLIC_KEY; from COMFYMQ_WORKER_SECRET_KEY)"), str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config({"COMFYMQ_WORKER_PUBLIC_KEY": KEY}, user_dir=str(tmp_path / "none"))
    assert str(e.value).endswith("set both or neither (from COMFYMQ_WORKER_PUBLIC_KEY)"), str(e.value)


def test_a_bad_address_from_comfyui_is_blamed_on_comfyui(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config({}, user_dir=str(tmp_path), comfy_url="localhost:8188")
    assert str(e.value).endswith("(from ComfyUI: its own address)"), str(e.value)
