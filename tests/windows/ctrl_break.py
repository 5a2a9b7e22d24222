"""The Windows check's launcher (runs on the Windows side): start a command in a
new process group, send it CTRL_BREAK_EVENT when asked, exit with its status.

    python.exe ctrl_break.py COMMAND ARG...

Reads stdin: a line `break` sends the event (once). The command's stdout and
stderr are this process's; its stdin is empty. Prints `started pid N`, then
how the event was sent.

Ctrl+Break goes to a process group of a console: a process started with
CREATE_NEW_PROCESS_GROUP leads a group of its own, so
GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid) reaches that process alone, as
when a service wrapper or a host program stops a child. (That is what
`os.kill(pid, signal.CTRL_BREAK_EVENT)` calls; it is called directly here, as
CPython 3.11's os.kill turns its failure into a SystemError.) Windows then
runs, on a new thread of the target, its C runtime's console handler, which
calls the SIGBREAK handler the target installed (CPython's, for trio's signal
receiver).

Wine 8 work-around (not needed on Windows): Wine cannot deliver the event.
GenerateConsoleCtrlEvent fails from the console Wine gives a process started
from Linux (ERROR_INVALID_ACCESS, for any event), and Wine's console server
propagates only CTRL_C_EVENT anyway; its console dispatch drops every event
for a CREATE_NEW_PROCESS_GROUP process; its C runtime maps only CTRL_C_EVENT
to a signal, never CTRL_BREAK_EVENT to SIGBREAK. When the call fails, the
launcher does the last step itself: a thread in the target that calls the
target's `ucrtbase!raise(SIGBREAK)`, which runs the installed SIGBREAK
handler on a foreign thread as Windows does. This skips only the console's
routing of the event to that handler.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from ctypes import wintypes
from typing import Any

CTRL_BREAK_EVENT = 1
SIGBREAK = 21  # the C runtime's number; signal.SIGBREAK on Windows


def _kernel32() -> Any:
    k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    k.GenerateConsoleCtrlEvent.argtypes = [wintypes.DWORD, wintypes.DWORD]
    k.GetModuleHandleW.restype = wintypes.HMODULE
    k.GetModuleHandleW.argtypes = [wintypes.LPCWSTR]
    k.GetProcAddress.restype = ctypes.c_void_p
    k.GetProcAddress.argtypes = [wintypes.HMODULE, ctypes.c_char_p]
    k.K32EnumProcessModules.argtypes = [
        wintypes.HANDLE, ctypes.POINTER(wintypes.HMODULE), wintypes.DWORD,
        ctypes.POINTER(wintypes.DWORD),
    ]  # fmt: skip
    k.K32GetModuleBaseNameW.argtypes = [
        wintypes.HANDLE, wintypes.HMODULE, wintypes.LPWSTR, wintypes.DWORD,
    ]  # fmt: skip
    k.CreateRemoteThread.restype = wintypes.HANDLE
    k.CreateRemoteThread.argtypes = [
        wintypes.HANDLE, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
        wintypes.DWORD, ctypes.c_void_p,
    ]  # fmt: skip
    k.WaitForSingleObject.argtypes = [wintypes.HANDLE, wintypes.DWORD]
    k.CloseHandle.argtypes = [wintypes.HANDLE]
    return k


def _remote_module(k: Any, process: int, name: str) -> int:
    """The base address of module `name` in `process`."""
    modules = (wintypes.HMODULE * 1024)()
    needed = wintypes.DWORD()
    if not k.K32EnumProcessModules(process, modules, ctypes.sizeof(modules), ctypes.byref(needed)):
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    text = ctypes.create_unicode_buffer(260)
    for module in modules[: needed.value // ctypes.sizeof(wintypes.HMODULE)]:
        k.K32GetModuleBaseNameW(process, module, text, len(text))
        if text.value.lower() == name:
            return int(module)
    raise OSError(f"{name} is not loaded in the target")


def raise_sigbreak_in(child: subprocess.Popen[bytes]) -> None:
    """Wine 8 work-around: run `raise(SIGBREAK)` of the child's C runtime on a new
    thread of the child (where Windows would run the CTRL_BREAK_EVENT handler)."""
    k = _kernel32()
    process = int(child._handle)  # type: ignore[attr-defined]
    own = k.GetModuleHandleW("ucrtbase.dll")
    address = k.GetProcAddress(own, b"raise")
    if not own or not address:
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    start = address - own + _remote_module(k, process, "ucrtbase.dll")
    thread = k.CreateRemoteThread(process, None, 0, start, SIGBREAK, 0, None)
    if not thread:
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    k.WaitForSingleObject(thread, 10_000)
    k.CloseHandle(thread)


def send_ctrl_break(child: subprocess.Popen[bytes]) -> str:
    """CTRL_BREAK_EVENT to the child's process group; returns how it was sent."""
    if _kernel32().GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, child.pid):
        return "GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT)"
    refused = ctypes.get_last_error()
    raise_sigbreak_in(child)
    return (
        f"GenerateConsoleCtrlEvent refused (error {refused}); "
        "raised SIGBREAK in the child's C runtime (Wine work-around)"
    )


def main(argv: list[str]) -> int:
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,  # type: ignore[attr-defined]
    )
    print(f"started pid {child.pid}", flush=True)
    for line in sys.stdin:
        if line.strip() == "break":
            print(f"sent CTRL_BREAK_EVENT: {send_ctrl_break(child)}", flush=True)
            break
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
