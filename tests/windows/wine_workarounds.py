"""Wine 8 work-around (test-only, not part of the product): trio's I/O manager
on a Wine that lacks SIO_BSP_HANDLE_SELECT.

Installed next to the embeddable CPython of the Windows check (tests/winehost.py)
with a `.pth` line that imports it; the pyz is not touched.

trio's IOCP manager starts by asking WSAIoctl for a socket's
SIO_BSP_HANDLE_SELECT handle and comparing it with its SIO_BASE_HANDLE (a check
for layered service providers). Real Windows answers both; Wine 8 answers
SIO_BSP_HANDLE_SELECT with WSAEOPNOTSUPP (10045), so every trio program would
fail at `trio.run`. When `trio._core._io_windows` is imported, its
`_get_underlying_socket` is wrapped: a call refused with WSAEOPNOTSUPP is asked
again as SIO_BASE_HANDLE, which on a Windows without such a provider returns
the same handle.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

TARGET = "trio._core._io_windows"
WSAEOPNOTSUPP = 10045


def patch(module: Any) -> None:
    original = module._get_underlying_socket
    base = module.WSAIoctls.SIO_BASE_HANDLE

    def get_underlying_socket(sock: Any, *, which: Any = base) -> Any:
        try:
            return original(sock, which=which)
        except OSError as exc:
            if which == base or getattr(exc, "winerror", None) != WSAEOPNOTSUPP:
                raise
            return original(sock, which=base)

    module._get_underlying_socket = get_underlying_socket


class PatchingLoader(importlib.abc.Loader):
    """Loads the module with its own loader, then patches it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        patch(module)


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds TARGET with the other finders and hands it a patching loader."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = PatchingLoader(spec.loader)
                return spec
        return None


sys.meta_path.insert(0, PatchOnImport())
