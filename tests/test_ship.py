"""Shipping: `python build.py` makes a pyz that runs on a bare Python, reproducibly;
the Windows pyz carries Windows wheels; no POSIX-only call on the main path.

The builds are slow (seconds each), so each pyz is built once per module. They
download pinned wheels from the package index: without it these tests fail.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from tests.conftest import LISTENING, ws_connect
from tests.webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build.py"


def _build(out: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BUILD), "--output", str(out), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stdout}\n{proc.stderr}"
    assert out.is_file()
    return proc.stdout


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def linux_pyz(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("pyz") / "wsserver.pyz"
    return out, _build(out)


@pytest.fixture(scope="module")
def windows_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("winpyz") / "wsserver-win_amd64-cp311.pyz"
    _build(out, "--platform", "win_amd64", "--python-version", "3.11")
    return out


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python with nothing installed (a venv without pip): only the stdlib and the pyz."""
    where = tmp_path_factory.mktemp("bare")
    venv.create(where, with_pip=False, symlinks=os.name != "nt")
    python = where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    probe = subprocess.run([str(python), "-c", "import trio"], capture_output=True, check=False)
    assert probe.returncode != 0, "the bare Python must not see the test environment's packages"
    return str(python)


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wsserver_build", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wsserver_build"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# -- the Linux pyz -------------------------------------------------------------------


def test_build_reports_what_it_bundled_with_size_and_sha256(linux_pyz: tuple[Path, str]) -> None:
    pyz, out = linux_pyz
    for name in ("trio 0.35.0", "trio-websocket 0.12.2", "cryptography", "cffi", "wsserver"):
        assert name in out
    assert f"sha256 {_sha256(pyz)}" in out
    assert f"{pyz.stat().st_size:,} bytes" in out
    assert (pyz.parent / "wsserver.pyz.sha256").read_text() == f"{_sha256(pyz)}  wsserver.pyz\n"
    with zipfile.ZipFile(pyz) as z:
        env = json.loads(z.read("environment.json"))
        assert env["entry_point"] == "wsserver.__main__:main"
        assert env["reproducible"] is True
        assert "site-packages/wsserver/wsserver.toml" in z.namelist()  # package data
        for name in ("client.js", "client.mjs", "client-worker.js", "client.d.ts"):  # the browser client
            assert f"site-packages/wsserver/static/{name}" in z.namelist()
        admin = sorted(p.name for p in (Path(__file__).parent.parent / "wsserver" / "static" / "admin").iterdir())
        assert "index.html" in admin and "admin.mjs" in admin
        for name in admin:  # the operator dashboard (/admin)
            assert f"site-packages/wsserver/static/admin/{name}" in z.namelist()
        assert not [n for n in z.namelist() if n.endswith(".pyc") or "/bin/" in n]
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_building_twice_gives_the_same_sha256(linux_pyz: tuple[Path, str], tmp_path: Path) -> None:
    again = tmp_path / "wsserver.pyz"
    _build(again)
    assert _sha256(again) == _sha256(linux_pyz[0])


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
async def test_pyz_on_a_bare_python_serves_a_client_and_exits_0_on_sigterm(
    linux_pyz: tuple[Path, str], bare_python: str, tmp_path: Path
) -> None:
    pyz = linux_pyz[0]
    data = tmp_path / "data"
    async with trio.open_nursery() as nursery:  # the sender's own HTTP client delivers a webhook
        receiver = await nursery.start(Receiver().serve)
        await _serve_pyz(pyz, bare_python, tmp_path, data, receiver)
        nursery.cancel_scope.cancel()
    extracted = list((tmp_path / "shiv").glob("wsserver.pyz_*/site-packages/wsserver/__init__.py"))
    assert len(extracted) == 1, "shiv extracts under $SHIV_ROOT"


async def _serve_pyz(pyz: Path, bare_python: str, tmp_path: Path, data: Path, receiver: Receiver) -> None:
    env = {**os.environ, "SHIV_ROOT": str(tmp_path / "shiv"), "WSSERVER_WEBHOOKS_URL": receiver.url}
    proc = subprocess.Popen(
        [
            bare_python,
            str(pyz),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(data),
        ],
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        log = ""
        with trio.fail_after(30):
            while (m := LISTENING.search(log)) is None:
                line = await trio.to_thread.run_sync(proc.stderr.readline)
                assert line, f"pyz exited with {proc.poll()}: {log}"
                log += line.decode()
        # another subcommand from the same pyz: a token signed with the generated secret
        minted = subprocess.run(
            [bare_python, str(pyz), "gentoken", "--user", "1", "--data-dir", str(data)],
            capture_output=True, text=True, env=env, check=True,
        ).stdout.strip()  # fmt: skip
        async with ws_connect(f"ws://{m.group(1)}:{m.group(2)}/ws?token={minted}") as ws:
            assert json.loads(await ws.get_message())["type"] == "connected"
            await receiver.wait_for(lambda: [e["event"] for e in receiver.delivered()] == ["user_online"])
            proc.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(lambda: proc.wait(20))
            assert code == 0, log + proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]


def test_pyz_subcommands_gen_config_check_config_and_systemd_unit(
    linux_pyz: tuple[Path, str], bare_python: str, tmp_path: Path
) -> None:
    pyz = linux_pyz[0]
    env = {**os.environ, "SHIV_ROOT": str(tmp_path / "shiv")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [bare_python, str(pyz), *args], capture_output=True, text=True, env=env, check=False
        )

    generated = run("gen-config")
    assert generated.returncode == 0
    assert generated.stdout == (ROOT / "wsserver.toml").read_text(encoding="utf-8")
    config = tmp_path / "wsserver.toml"
    config.write_text(generated.stdout, encoding="utf-8")
    assert run("check-config", "--config", str(config)).stdout == f"ok: {config}\n"
    config.write_text("[limits]\nburst = 0\n", encoding="utf-8")
    bad = run("check-config", "--config", str(config))
    assert bad.returncode == 2 and "limits.burst" in bad.stderr
    unit = run("systemd-unit").stdout
    assert f"ExecStart=/usr/bin/python3 {pyz} serve " in unit  # this pyz by default
    assert run("version").stdout.startswith("wsserver ")


# -- the Windows pyz -----------------------------------------------------------------


def test_windows_pyz_carries_windows_wheels_and_no_linux_binaries(windows_pyz: Path) -> None:
    with zipfile.ZipFile(windows_pyz) as z:
        names = z.namelist()
        site = [n.removeprefix("site-packages/") for n in names if n.startswith("site-packages/")]
        wheel_tags = [
            line
            for n in site
            if n.endswith(".dist-info/WHEEL")
            for line in z.read(f"site-packages/{n}").decode().splitlines()
            if line.startswith("Tag:")
        ]
    assert "_cffi_backend.cp311-win_amd64.pyd" in site  # trio's cffi (os_name == "nt")
    assert "cryptography/hazmat/bindings/_rust.pyd" in site
    assert "pycparser/__init__.py" in site
    assert "tzdata/zoneinfo/Asia/Shanghai" in site
    assert "trio/_core/_windows_cffi.py" in site
    assert "wsserver/__main__.py" in site
    assert not [n for n in site if n.endswith((".so", ".dylib")) or ".libs/" in n]
    assert not [t for t in wheel_tags if "linux" in t or "macosx" in t]
    assert any("win_amd64" in t for t in wheel_tags)
    assert any(n.startswith("cffi-2.0.0.dist-info/") for n in site)


def test_lock_markers_are_evaluated_for_the_target_not_the_build_machine() -> None:
    build = load_build()
    windows = build.read_lock(build.LOCK, build.Target("win_amd64", (3, 11)).marker_environment())
    names = {pin.split("==")[0] for pin in windows}
    assert {"cffi", "pycparser", "tzdata", "trio", "cryptography"} <= names
    target = build.Target("win_amd64", (3, 12))
    assert target.default_output().name == "wsserver-win_amd64-cp312.pyz"
    assert target.pip_flags()[-2:] == ["--platform", "win_amd64"]
    assert "cp312" in target.pip_flags()


def test_closure_check_fails_when_a_windows_only_dependency_is_missing(tmp_path: Path) -> None:
    build = load_build()

    def dist(name: str, version: str, *requires: str) -> None:
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        meta = [f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
        (info / "METADATA").write_text("\n".join(meta) + "\n", encoding="utf-8")
        (info / "WHEEL").write_text("Tag: py3-none-any\n", encoding="utf-8")

    dist("wsserver", "0.1.0", "trio>=0.25")
    dist("trio", "0.35.0", 'cffi>=1.14; os_name == "nt"')
    linux = build.Target(None, sys.version_info[:2]).marker_environment()
    if linux["os_name"] != "nt":
        assert [b.name for b in build.check_closure(tmp_path, linux)] == ["trio", "wsserver"]
    with pytest.raises(build.BuildError, match="cffi is missing"):
        build.check_closure(tmp_path, build.Target("win_amd64", (3, 11)).marker_environment())


# -- Windows on the main path --------------------------------------------------------

POSIX_ONLY_MODULES = {"fcntl", "pwd", "grp", "resource", "termios", "tty", "pty", "posix"}
POSIX_ONLY_CALLS = {
    ("os", "getuid"), ("os", "geteuid"), ("os", "getgid"), ("os", "fork"), ("os", "setsid"),
    ("os", "killpg"), ("os", "getpgid"), ("os", "chown"), ("signal", "SIGHUP"),
    ("signal", "SIGKILL"), ("signal", "SIGUSR1"), ("signal", "pause"), ("signal", "alarm"),
}  # fmt: skip


def test_package_uses_no_posix_only_module_or_call() -> None:
    """What runs on Windows must not import fcntl & co. or touch signal.SIGHUP
    directly (SIGHUP is looked up with getattr where it exists)."""
    found = []
    for path in sorted((ROOT / "wsserver").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            found += [f"{path.name}: import {n}" for n in names if n in POSIX_ONLY_MODULES]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in POSIX_ONLY_CALLS
            ):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert found == []


def test_generated_secret_without_hard_links_falls_back_to_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsserver import tokens

    def no_links(src: Any, dst: Any) -> None:
        raise PermissionError(1, "Operation not permitted")  # FAT, some network shares

    monkeypatch.setattr(tokens.os, "link", no_links)
    data = tmp_path / "sub dir" / "data"
    secret = tokens.load_or_create_secret(data)
    assert len(secret) > 40
    assert (data / "jwt_secret").read_text(encoding="utf-8").strip() == secret
    assert tokens.load_or_create_secret(data) == secret
    assert [p.name for p in data.iterdir()] == ["jwt_secret"]  # no temporary file left
    # a secret already in place is never replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "jwt_secret").write_text("existing\n", encoding="utf-8")
    tmp = other / "candidate"
    tmp.write_text("new\n", encoding="utf-8")
    tokens._place_if_absent(tmp, other / "jwt_secret")
    assert (other / "jwt_secret").read_text(encoding="utf-8") == "existing\n"


def test_build_script_is_documented_in_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"python3? build\.py --platform win_amd64", readme)
    assert "systemd-unit > /etc/systemd/system/wsserver.service" in readme
    assert "systemctl reload wsserver" in readme
    assert "py -3.11 wsserver-win_amd64-cp311.pyz serve --config wsserver.toml" in readme
