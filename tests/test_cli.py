"""Tests for the `wsserver` command line, run in-process through `main(argv)`.

Only the subcommands that need no server: version, gen-config, check-config, gentoken.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsserver.__main__ import main
from wsserver._version import __version__
from wsserver.config import default_config_text

ROOT_TOML = Path(__file__).resolve().parent.parent / "wsserver.toml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own WSSERVER_* variables out of these tests."""
    for name in list(os.environ):
        if name.startswith("WSSERVER_"):
            monkeypatch.delenv(name)


def test_version_prints_name_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"wsserver {__version__}\n"


def test_gen_config_prints_the_documented_default_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gen-config"]) == 0
    out = capsys.readouterr().out
    assert out == ROOT_TOML.read_text(encoding="utf-8")
    assert out == default_config_text()


def test_check_config_accepts_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "good.toml"
    path.write_text("[server]\nport = 9000\n", encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"ok: {path}\n"


def test_check_config_accepts_the_generated_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["gen-config"])
    path = tmp_path / "generated.toml"
    path.write_text(capsys.readouterr().out, encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 0


def test_gen_config_writes_utf8_where_the_streams_default_to_a_windows_code_page(
    tmp_path: Path,
) -> None:
    """On Windows a redirected stdout is in the ANSI code page (PYTHONIOENCODING
    stands in for it here): `gen-config > wsserver.toml` must still write the
    UTF-8 that TOML requires, or the file would not load."""
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "PYTHONPATH": str(ROOT_TOML.parent)}
    out = subprocess.run(
        [sys.executable, "-m", "wsserver", "gen-config"], capture_output=True, env=env, check=True
    ).stdout
    assert out == ROOT_TOML.read_bytes()
    path = tmp_path / "wsserver.toml"
    path.write_bytes(out)
    assert main(["check-config", "--config", str(path)]) == 0


def test_check_config_rejects_a_bad_file_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[limits]\nsend_queue = "5"\n', encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "config error: limits.send_queue: expected int, got str\n"


def test_check_config_rejects_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_check_config_reads_the_path_from_wsserver_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "from-env.toml"
    path.write_text("[unknown]\n", encoding="utf-8")
    monkeypatch.setenv("WSSERVER_CONFIG", str(path))
    assert main(["check-config"]) == 2
    assert capsys.readouterr().err == "config error: unknown: unknown section\n"


def test_check_config_without_a_file_checks_the_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_check_config_reports_a_bad_environment_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WSSERVER_LIMITS_BURST", "0")
    assert main(["check-config"]) == 2
    assert "WSSERVER_LIMITS_BURST" in capsys.readouterr().err


def test_serve_with_a_bad_config_exits_2_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 70000\n", encoding="utf-8")
    assert main(["serve", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith("config error: server.port: ")


def test_no_subcommand_means_serve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = -1\n", encoding="utf-8")
    assert main(["--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith("config error: server.port: ")


def test_serve_flags_override_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.toml"
    path.write_text("[server]\nport = 9000\n", encoding="utf-8")
    assert main(["serve", "--config", str(path), "--port", "70000"]) == 2
    assert capsys.readouterr().err.startswith("config error: server.port: ")


def test_gentoken_warns_when_it_creates_a_new_secret_that_only_its_data_dir_knows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "elsewhere"
    assert main(["gentoken", "--user", "1", "--data-dir", str(data)]) == 0
    out, err = capsys.readouterr()
    assert out.count(".") == 2  # the JWT, on stdout alone
    secret = data / "jwt_secret"
    assert secret.exists()
    assert f"created a new secret in {secret}" in err
    assert "another data directory rejects this token" in err
    # the secret now exists: signed with it, nothing to warn about
    assert main(["gentoken", "--user", "1", "--data-dir", str(data)]) == 0
    assert capsys.readouterr().err == ""


def test_gentoken_with_a_configured_secret_creates_no_file_and_warns_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSSERVER_AUTH_JWT_SECRET", "a-shared-secret-0123456789abcdef")
    assert main(["gentoken", "--user", "1", "--data-dir", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().err == ""
    assert not (tmp_path / "d" / "jwt_secret").exists()
