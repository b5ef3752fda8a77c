"""Run a command under a seccomp filter shaped like feedagent.service's sandbox, without systemd.

    python tests/deploy/sandbox.py UNIT -- COMMAND [ARG...]

No systemd runs as PID 1 on CI machines, so the unit itself cannot be started.
This wrapper reads the unit's ``SystemCallFilter=``, ``RestrictAddressFamilies=``,
``MemoryDenyWriteExecute=`` and ``NoNewPrivileges=`` lines, builds the same kind
of seccomp filter systemd 252 builds for them (with libseccomp, through ctypes),
loads it and execs the command. What it shows: CPython, aiohttp, msgspec and
pydantic-core run with no W+X memory and only ``@system-service`` minus
``@privileged @resources``. What it does not cover: the mount, user and
namespace sandboxing (ProtectSystem=, PrivateTmp=, DynamicUser=, ...).

Group contents come from ``systemd-analyze syscall-filter``, so the filter is
exactly the host systemd's. As systemd does, ``execve``, ``exit``, ``exit_group``,
``getrlimit``, ``rt_sigreturn``, ``sigreturn`` and ``@default`` are always allowed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import socket
import subprocess
import sys
from pathlib import Path

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
SHM_EXEC = 0o100000
_IMPLICIT = ["execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn", "@default"]


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, in order; repeated keys accumulate."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def expand(names: list[str], seen: set[str] | None = None) -> set[str]:
    """System call names in ``names`` (groups such as ``@system-service`` resolved recursively)."""
    seen = set() if seen is None else seen
    calls: set[str] = set()
    for name in names:
        if not name.startswith("@"):
            calls.add(name)
            continue
        if name in seen:
            continue
        seen.add(name)
        text = subprocess.run(["systemd-analyze", "syscall-filter", name], check=True, capture_output=True,
                              text=True).stdout
        members = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and not ln.strip().startswith("#")]
        calls |= expand(members, seen)
    return calls


def allowed_syscalls(settings: dict[str, list[str]]) -> set[str]:
    """What the unit's ``SystemCallFilter=`` lines allow (an allow list followed by ``~`` deny lists)."""
    allow: set[str] = set()
    deny: set[str] = set()
    for value in settings.get("SystemCallFilter", []):
        if value.startswith("~"):
            deny |= expand(value[1:].split())
        else:
            allow |= expand(value.split())
    if not allow:
        raise SystemExit("the unit has no SystemCallFilter= allow list")
    return (allow | expand(_IMPLICIT)) - (deny - expand(_IMPLICIT))


def load_filter(settings: dict[str, list[str]]) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x00050000 | errno.EPERM)  # SCMP_ACT_ERRNO(EPERM), as SystemCallErrorNumber=EPERM
    if not ctx:
        raise SystemExit("seccomp_init failed")

    def rule(name: str, *conds: tuple[int, int, int, int]) -> None:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a system call of this architecture
        array = (_ArgCmp * len(conds))(*[_ArgCmp(*c) for c in conds]) if conds else None
        rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, len(conds), array)
        if rc < 0 and rc != -errno.EEXIST:
            raise SystemExit(f"seccomp_rule_add({name}) failed: {rc}")

    allowed = allowed_syscalls(settings)
    mdwe = settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes"
    families = [f for value in settings.get("RestrictAddressFamilies", []) for f in value.split()]
    special = {"socket"} if families else set()
    if mdwe:
        special |= {"mmap", "mmap2", "mprotect", "pkey_mprotect", "shmat"}
    for name in sorted(allowed - special):
        rule(name)
    if "socket" in special and "socket" in allowed:
        for family in families:
            rule("socket", (0, SCMP_CMP_EQ, int(getattr(socket, family)), 0))
    if mdwe:
        for call in ("mmap", "mmap2"):  # refuse only when both PROT_WRITE and PROT_EXEC are asked for
            if call in allowed:
                rule(call, (2, SCMP_CMP_MASKED_EQ, mmap.PROT_EXEC, 0))
                rule(call, (2, SCMP_CMP_MASKED_EQ, mmap.PROT_WRITE, 0))
        for call in ("mprotect", "pkey_mprotect"):  # never make memory executable afterwards
            if call in allowed:
                rule(call, (2, SCMP_CMP_MASKED_EQ, mmap.PROT_EXEC, 0))
        if "shmat" in allowed:
            rule("shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, 0))
    rc = lib.seccomp_load(ctx)  # libseccomp sets no_new_privs first (NoNewPrivileges=yes)
    if rc < 0:
        raise SystemExit(f"seccomp_load failed: {rc}")


def main(argv: list[str]) -> None:
    if "--" not in argv or argv.index("--") != 1:
        raise SystemExit(__doc__)
    settings = unit_settings(Path(argv[0]))
    command = argv[2:]
    load_filter(settings)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
