"""Settings: defaults < config.yaml < MEDIAMIRROR_* environment < command-line flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import Cli
from mediamirror.config import Settings, declared, env_name, expand_vars, load_settings
from mediamirror.errors import ConfigError


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_file_or_variable(tmp_path: Path) -> None:
    settings = load_settings(env={"MEDIAMIRROR_HOME": str(tmp_path)})
    assert settings.sync_page_size == Settings.sync_page_size == 1000
    assert settings.large_image_bytes == 16 * 1024 * 1024
    assert settings.auto_postprocess is True
    assert settings.catalog_url == f"sqlite:///{(tmp_path / 'catalog.db').resolve()}"
    assert settings.config_path == tmp_path / "config.yaml"


def test_precedence_default_file_env_flag(tmp_path: Path) -> None:
    write_config(tmp_path, "sync_page_size: 10\nlarge_image_bytes: 20\nsync_lease_seconds: 30\n")
    env = {
        "MEDIAMIRROR_HOME": str(tmp_path),
        "MEDIAMIRROR_LARGE_IMAGE_BYTES": "200",
        "MEDIAMIRROR_SYNC_LEASE_SECONDS": "300",
    }
    settings = load_settings({"sync_lease_seconds": 3000, "log_level": None}, env=env)
    assert settings.sync_page_size == 10  # file beats default
    assert settings.large_image_bytes == 200  # env beats file
    assert settings.sync_lease_seconds == 3000  # flag beats env
    assert settings.log_level == "warning"  # a flag not given (None) changes nothing


def test_home_and_config_decide_where_the_file_is(tmp_path: Path) -> None:
    write_config(tmp_path / "a", "sync_page_size: 11\n")
    other = write_config(tmp_path / "b", "sync_page_size: 22\n")
    env = {"MEDIAMIRROR_HOME": str(tmp_path / "a")}
    assert load_settings(env=env).sync_page_size == 11
    assert load_settings(env={**env, "MEDIAMIRROR_CONFIG": str(other)}).sync_page_size == 22
    assert load_settings({"home": str(tmp_path / "b")}, env=env).sync_page_size == 22
    assert load_settings({"config": str(tmp_path / "missing.yaml")}, env=env).sync_page_size == (
        1000
    )


def test_variables_are_expanded_in_the_file(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        "database_url: ${DB_URL}\n"
        "email:\n  password: '${SMTP_PASSWORD}'\n  to_addrs: ['${USER_NAME}@example.org']\n"
        # The email block is typed: a complete one (from_addr and smtp_server are required).
        "  from_addr: mm@example.org\n  smtp_server: smtp.example.org\n",
    )
    env = {
        "MEDIAMIRROR_HOME": str(tmp_path),
        "DB_URL": "sqlite:////tmp/elsewhere.db",
        "SMTP_PASSWORD": "s3cr3t",
        "USER_NAME": "me",
    }
    settings = load_settings(env=env)
    assert settings.database_url == "sqlite:////tmp/elsewhere.db"
    assert settings.sections["email"]["password"] == "s3cr3t"
    assert settings.sections["email"]["to_addrs"] == ["me@example.org"]


def test_unset_variable_is_a_config_error(tmp_path: Path) -> None:
    write_config(tmp_path, "log_level: ${NOT_SET_ANYWHERE}\n")
    with pytest.raises(ConfigError, match=r"\$\{NOT_SET_ANYWHERE\} is used but not set"):
        load_settings(env={"MEDIAMIRROR_HOME": str(tmp_path)})


def test_expand_vars_leaves_non_strings_alone() -> None:
    assert expand_vars({"a": [1, True, None, "${X}-${X}"]}, {"X": "y"}) == {
        "a": [1, True, None, "y-y"]
    }


def test_unknown_key_is_a_config_error(tmp_path: Path) -> None:
    write_config(tmp_path, "sync_page_sise: 10\n")
    with pytest.raises(ConfigError, match="unknown setting 'sync_page_sise'"):
        load_settings(env={"MEDIAMIRROR_HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("where", "value"),
    [("env", "ten"), ("env", "1.5"), ("file", "ten"), ("file", "true"), ("flag", "x")],
)
def test_bad_int_is_a_config_error(tmp_path: Path, where: str, value: str) -> None:
    env = {"MEDIAMIRROR_HOME": str(tmp_path)}
    overrides = {}
    if where == "env":
        env["MEDIAMIRROR_SYNC_PAGE_SIZE"] = value
    elif where == "file":
        write_config(tmp_path, f"sync_page_size: {value}\n")
    else:
        overrides["sync_page_size"] = value
    with pytest.raises(ConfigError, match=r"setting .sync_page_size.*not a valid int"):
        load_settings(overrides, env=env)


@pytest.mark.parametrize("value", ["0", "-3"])
def test_page_size_must_be_positive(tmp_path: Path, value: str) -> None:
    env = {"MEDIAMIRROR_HOME": str(tmp_path), "MEDIAMIRROR_SYNC_PAGE_SIZE": value}
    with pytest.raises(ConfigError, match="must be positive"):
        load_settings(env=env)


@pytest.mark.parametrize(
    ("text", "expected"), [("0", 0.0), ("25", 25.0), ("12.5", 12.5), ("30000/1001", 30 / 1.001)]
)
def test_frame_rate_setting_takes_decimals_and_fractions(
    tmp_path: Path, text: str, expected: float
) -> None:
    env = {"MEDIAMIRROR_HOME": str(tmp_path), "MEDIAMIRROR_TRANSCODE_VFR_FPS": text}
    assert load_settings(env=env).transcode_vfr_fps == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("nan", "not a valid float"), ("1/0", "not a valid float"), ("-1", "not be negative")],
)
def test_bad_frame_rate_setting_is_a_config_error(tmp_path: Path, text: str, reason: str) -> None:
    env = {"MEDIAMIRROR_HOME": str(tmp_path), "MEDIAMIRROR_TRANSCODE_VFR_FPS": text}
    with pytest.raises(ConfigError, match=reason):
        load_settings(env=env)


@pytest.mark.parametrize(("text", "expected"), [("yes", True), ("0", False), ("off", False)])
def test_booleans(tmp_path: Path, text: str, expected: bool) -> None:
    env = {"MEDIAMIRROR_HOME": str(tmp_path), "MEDIAMIRROR_AUTO_POSTPROCESS": text}
    assert load_settings(env=env).auto_postprocess is expected


def test_bad_boolean_and_bad_yaml_are_config_errors(tmp_path: Path) -> None:
    env = {"MEDIAMIRROR_HOME": str(tmp_path), "MEDIAMIRROR_AUTO_POSTPROCESS": "maybe"}
    with pytest.raises(ConfigError, match="not a valid bool"):
        load_settings(env=env)
    write_config(tmp_path, "sync_page_size: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(env={"MEDIAMIRROR_HOME": str(tmp_path)})
    write_config(tmp_path, "- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(env={"MEDIAMIRROR_HOME": str(tmp_path)})


def test_every_setting_has_help_and_an_env_name() -> None:
    names = [f.name for f in declared()]
    assert len(names) == len(set(names))
    assert "sections" not in names
    for fld in declared():
        assert fld.metadata["help"], fld.name
        assert env_name(fld.name) == "MEDIAMIRROR_" + fld.name.upper()


def test_cli_flags_beat_environment_and_file(sqlite_cli: Cli, tmp_path: Path) -> None:
    """Through the real CLI: --home beats MEDIAMIRROR_HOME; the file under the chosen home
    is the one read; --database-url beats MEDIAMIRROR_DATABASE_URL."""
    flag_home = tmp_path / "flag-home"
    write_config(flag_home, "no_such_setting: 1\n")  # proves this file is the one read
    result = sqlite_cli.run("--home", str(flag_home), "source", "list", ok=False)
    assert "unknown setting 'no_such_setting'" in result.stderr

    flag_db = tmp_path / "flag.db"
    sqlite_cli.run("--database-url", f"sqlite:///{flag_db}", "source", "list")
    assert flag_db.exists()
    assert not Path(sqlite_cli.database_url.removeprefix("sqlite:///")).exists()
