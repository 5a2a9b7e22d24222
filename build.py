#!/usr/bin/env python3
"""Build wsserver as one self-contained file, a shiv zipapp.

    python build.py                                   # this machine: dist/wsserver.pyz
    python build.py --platform win_amd64              # dist/wsserver-win_amd64-cp311.pyz
    python build.py --platform win_amd64 --python-version 3.12

What goes in: the wsserver package, built as a wheel from this checkout, and the
pinned wheels of `requirements.lock`, chosen for the target platform and CPython
version (`pip download --only-binary=:all:`, then `pip install --no-deps --target`).
Each lock line's environment marker is evaluated for the target, not for the build
machine, and the build fails when a bundled distribution's `Requires-Dist` is not
satisfied for the target (the trap: trio needs cffi only where `os_name == "nt"`).

Binary wheels (cffi's `_cffi_backend`) load only in the CPython minor version they
were built for, so every pyz is tied to one: a cross build names it in the file name
(`-cp311`); the native build is for the interpreter that runs build.py.

Reproducible: the same checkout, lock, target and tools give a byte-identical pyz.
Zip timestamps come from SOURCE_DATE_EPOCH (default 1980-01-01), shiv writes entries
in sorted order (`--reproducible`), file modes are normalised, and nothing of the
build machine (no .pyc, no console-script launchers, no temporary paths) is bundled.

At run time shiv extracts the bundled site-packages once, into
`$SHIV_ROOT/<pyz file name>_<build id>` (default root `~/.shiv`); the systemd unit of
`wsserver systemd-unit` points SHIV_ROOT at the service's cache directory.
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.markers import default_environment  # type: ignore[no-redef,unused-ignore]
    from pip._vendor.packaging.requirements import (  # type: ignore[assignment,unused-ignore]
        Requirement,
    )

ROOT = Path(__file__).resolve().parent
LOCK = ROOT / "requirements.lock"
DIST = ROOT / "dist"
ENTRY_POINT = "wsserver.__main__:main"
SHEBANG = "/usr/bin/env python3"
DEFAULT_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can carry

WINDOWS = {"os_name": "nt", "sys_platform": "win32", "platform_system": "Windows"}
PLATFORMS: dict[str, dict[str, str]] = {
    "win_amd64": {**WINDOWS, "platform_machine": "AMD64"},
    "win32": {**WINDOWS, "platform_machine": "x86"},
    "win_arm64": {**WINDOWS, "platform_machine": "ARM64"},
}
"""Cross-build targets (pip platform tag -> how PEP 508 markers see that platform)."""


class BuildError(Exception):
    """The build cannot go on; the message says why."""


@dataclass(frozen=True)
class Target:
    """What the pyz is for: a platform (None = this machine) and a CPython version."""

    platform: str | None
    python: tuple[int, int]

    @property
    def abi(self) -> str:
        return f"cp{self.python[0]}{self.python[1]}"

    @property
    def native(self) -> bool:
        return self.platform is None and self.python == sys.version_info[:2]

    @property
    def description(self) -> str:
        where = self.platform or sysconfig.get_platform().replace("-", "_").replace(".", "_")
        return f"CPython {self.python[0]}.{self.python[1]} on {where}"

    def default_output(self) -> Path:
        if self.native:
            return DIST / "wsserver.pyz"
        where = self.platform or sysconfig.get_platform().replace("-", "_").replace(".", "_")
        return DIST / f"wsserver-{where}-{self.abi}.pyz"

    def pip_flags(self) -> list[str]:
        """Wheel selection for `pip download` and `pip install`: binaries only, for the target."""
        flags = ["--only-binary=:all:"]
        if not self.native:
            version = f"{self.python[0]}.{self.python[1]}"
            flags += ["--python-version", version, "--implementation", "cp", "--abi", self.abi]
        if self.platform is not None:
            flags += ["--platform", self.platform]
        return flags

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker variables as the target sees them."""
        env = {k: str(v) for k, v in default_environment().items()}
        if not self.native:
            version = f"{self.python[0]}.{self.python[1]}"
            env.update(
                python_version=version,
                python_full_version=f"{version}.0",
                implementation_name="cpython",
                implementation_version=f"{version}.0",
                platform_python_implementation="CPython",
            )
        if self.platform is not None:
            env.update(PLATFORMS[self.platform], platform_release="", platform_version="")
        return env


@dataclass(frozen=True)
class Bundled:
    """One distribution in the pyz."""

    name: str
    version: str
    tags: str
    required: bool  # False: in the lock but needed by nothing on this target


@dataclass(frozen=True)
class BuildResult:
    """The pyz that was written."""

    path: Path
    size: int
    sha256: str
    bundled: tuple[Bundled, ...]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path, env: dict[str, str]) -> list[str]:
    """The `name==version` pins of the lock whose marker holds for `env`."""
    pins = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or req.extras or req.url:
            raise BuildError(
                f"{path.name}:{number}: expected `name==version [; marker]`, got {line!r}"
            )
        if req.marker is None or req.marker.evaluate(env):
            pins.append(f"{_canonical(req.name)}=={specs[0].version}")
    return pins


def _run(args: Sequence[str], *, env: dict[str, str] | None = None) -> str:
    """Run a build tool; its output is shown only when it fails."""
    proc = subprocess.run(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n{proc.stdout}")
    return proc.stdout


def _pip(*args: str | Path) -> str:
    return _run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *map(str, args)]
    )


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def project_version() -> str:
    """`wsserver.__version__`, read without importing the package."""
    text = (ROOT / "wsserver" / "_version.py").read_text(encoding="utf-8")
    m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.MULTILINE)
    if m is None:
        raise BuildError("wsserver/_version.py defines no __version__")
    return m.group(1)


def install_project(site: Path) -> str:
    """Put the wsserver package and its dist-info into `site`; returns the version.

    What a wheel install would produce, made directly from pyproject.toml: the
    packages (every directory with an `__init__.py`), their package-data globs, and
    METADATA with the dependencies the closure check follows. No build backend runs,
    so nothing of the build machine (tool versions, paths, times) gets in.
    """
    project = _pyproject()
    name = project["project"]["name"]
    version = project_version()
    package_data = project.get("tool", {}).get("setuptools", {}).get("package-data", {})
    files: list[Path] = []
    for init in sorted((ROOT / name).rglob("__init__.py")):
        package = init.parent
        if "__pycache__" in package.parts:
            continue
        files += sorted(package.glob("*.py"))
        dotted = ".".join(package.relative_to(ROOT).parts)
        for pattern in [*package_data.get(dotted, []), *package_data.get("*", [])]:
            files += sorted(p for p in package.glob(pattern) if p.is_file())
    for path in sorted(set(files)):
        target = site / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    meta = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {project['project'].get('description', '')}",
        f"Requires-Python: {project['project'].get('requires-python', '')}",
        *(f"Requires-Dist: {dep}" for dep in project["project"].get("dependencies", [])),
    ]
    scripts = project["project"].get("scripts", {})
    documents = {
        "METADATA": "\n".join(meta) + "\n",
        "WHEEL": "Wheel-Version: 1.0\nGenerator: wsserver build.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "entry_points.txt": "[console_scripts]\n"
        + "".join(f"{k} = {v}\n" for k, v in sorted(scripts.items())),
        "top_level.txt": f"{name}\n",
        "INSTALLER": "wsserver build.py\n",
    }
    for filename, text in documents.items():
        (info / filename).write_text(text, encoding="utf-8")
    records = []
    for path in sorted(p for p in (site / name).rglob("*") if p.is_file()) + sorted(info.iterdir()):
        data = path.read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        records.append(f"{path.relative_to(site).as_posix()},sha256={digest},{len(data)}")
    records.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(records) + "\n", encoding="utf-8")
    return version


def tidy(site: Path) -> None:
    """Drop what is specific to the build machine and normalise file modes."""
    shutil.rmtree(site / "bin", ignore_errors=True)  # launchers pip wrote for this machine
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    for path in site.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)


def _dists(site: Path) -> dict[str, tuple[str, str, list[str], str]]:
    """name -> (display name, version, Requires-Dist lines, wheel tags) of the installed dists."""
    found = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = email.parser.Parser().parsestr((info / "METADATA").read_text(encoding="utf-8"))
        wheel = email.parser.Parser().parsestr((info / "WHEEL").read_text(encoding="utf-8"))
        tags = ", ".join(wheel.get_all("Tag") or [])
        found[_canonical(meta["Name"])] = (
            meta["Name"],
            meta["Version"],
            list(meta.get_all("Requires-Dist") or []),
            tags,
        )
    return found


def check_closure(site: Path, env: dict[str, str]) -> tuple[Bundled, ...]:
    """Every requirement of wsserver, transitively, evaluated for the target: installed
    and of a matching version. Raises BuildError listing what is missing."""
    dists = _dists(site)
    problems: list[str] = []
    needed: set[str] = set()
    queue: list[tuple[str, frozenset[str]]] = [("wsserver", frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        item = queue.pop()
        if item in seen:
            continue
        seen.add(item)
        name, extras = item
        needed.add(name)
        for line in dists[name][2]:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            dep = _canonical(req.name)
            if dep not in dists:
                problems.append(f"{dep} is missing (required by {name}: {line})")
            elif not req.specifier.contains(dists[dep][1], prereleases=True):
                problems.append(f"{dep} {dists[dep][1]} does not satisfy {name}'s {line}")
            else:
                queue.append((dep, frozenset(req.extras)))
    if problems:
        raise BuildError("the bundle is incomplete for the target:\n  " + "\n  ".join(problems))
    return tuple(
        Bundled(display, version, tags, key in needed)
        for key, (display, version, _, tags) in sorted(dists.items())
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(
    target: Target, output: Path, *, lock: Path = LOCK, say: Callable[[str], None] = print
) -> BuildResult:
    """Build the pyz for `target` at `output`; `say` reports progress."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or str(DEFAULT_EPOCH)
    env = target.marker_environment()
    pins = read_lock(lock, env)
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wsserver-build-") as tmp:
        work = Path(tmp)
        wheels, site = work / "wheels", work / "site-packages"
        say(f"building wsserver {project_version()} for {target.description}")
        _pip("download", "--no-deps", "--dest", wheels, *target.pip_flags(), *pins)
        _pip(
            "install", "--no-deps", "--no-compile", "--no-index", "--find-links", wheels,
            "--target", site, *target.pip_flags(), *pins,
        )  # fmt: skip
        install_project(site)
        tidy(site)
        bundled = check_closure(site, env)
        partial = output.with_name(output.name + ".partial")
        try:
            _run(
                [
                    sys.executable, "-m", "shiv", "--site-packages", str(site),
                    "--entry-point", ENTRY_POINT, "--python", SHEBANG,
                    "--reproducible", "--compressed", "--output-file", str(partial),
                ],
                env={"SOURCE_DATE_EPOCH": epoch},
            )  # fmt: skip
            os.replace(partial, output)  # never a half-written pyz under the real name
        finally:
            partial.unlink(missing_ok=True)
    digest = sha256_of(output)
    output.with_name(output.name + ".sha256").write_text(
        f"{digest}  {output.name}\n", encoding="utf-8"
    )
    return BuildResult(output, output.stat().st_size, digest, bundled)


def report(result: BuildResult, target: Target, say: Callable[[str], None] = print) -> None:
    """Print what was bundled, the size and the hash."""
    say("bundled:")
    width = max(len(f"{b.name} {b.version}") for b in result.bundled)
    for b in result.bundled:
        note = "" if b.required else "  (not required on this target; bundled by the lock)"
        say(f"  {f'{b.name} {b.version}':<{width}}  {b.tags}{note}")
    try:
        shown = result.path.relative_to(Path.cwd())
    except ValueError:
        shown = result.path
    say(f"wrote {shown}: {result.size:,} bytes ({result.size / 2**20:.1f} MiB)")
    say(f"sha256 {result.sha256}")
    version = f"{target.python[0]}.{target.python[1]}"
    if target.platform and target.platform.startswith("win"):
        say(
            f"run it with CPython {version}: py -{version} {result.path.name} serve --config wsserver.toml"
        )
    else:
        say(
            f"run it with CPython {version}: python{version} {result.path.name} serve --config wsserver.toml"
        )


def _python_version(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"3\.(\d+)", text)
    if m is None or int(m.group(1)) < 11:
        raise argparse.ArgumentTypeError(
            f"expected a CPython version 3.11 or newer, like 3.11; got {text!r}"
        )
    return 3, int(m.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--platform",
        choices=sorted(PLATFORMS),
        help="build for another platform (pip platform tag); default: this machine",
    )
    parser.add_argument(
        "--python-version",
        type=_python_version,
        metavar="X.Y",
        help="CPython version the pyz is for (default: 3.11 for --platform, else this interpreter)",
    )
    parser.add_argument("--output", type=Path, metavar="PATH", help="where to write the pyz")
    parser.add_argument(
        "--lock", type=Path, default=LOCK, help="pinned requirements (default: requirements.lock)"
    )
    args = parser.parse_args(argv)
    python = args.python_version or ((3, 11) if args.platform else sys.version_info[:2])
    target = Target(args.platform, python)
    try:
        result = build(target, args.output or target.default_output(), lock=args.lock)
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    report(result, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
