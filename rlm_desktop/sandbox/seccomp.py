"""A seccomp-BPF syscall filter for the worker, built by hand (no libseccomp), x86_64 and aarch64.

Denies what contained code never needs and an escape would: exec, new processes (threads stay
allowed), sockets of every family (AF_UNIX socketpair excepted, asyncio needs it), ptrace and
cross-process memory, signals to other processes, namespaces and mounts, bpf, io_uring, keyrings,
module/kexec/reboot, chown/chmod/utime/xattr changes (metadata Landlock does not cover), uid
changes, TIOCSTI/TIOCLINUX. Denied calls fail with EPERM
(clone3 with ENOSYS, so glibc falls back to clone, whose flags BPF can inspect); a foreign
architecture or the x32 ABI kills the process.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Syscall numbers, generated from the kernel headers (a test compares them with
# /usr/include/x86_64-linux-gnu/asm/unistd_64.h and asm-generic/unistd.h when present).
X86_64 = {"execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "ptrace": 101, "socket": 41, "socketpair": 53, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "keyctl": 250, "add_key": 248, "request_key": 249, "quotactl": 179, "quotactl_fd": 443, "lookup_dcookie": 212, "open_by_handle_at": 304, "name_to_handle_at": 303, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260, "setuid": 105, "setgid": 106, "setreuid": 113, "setregid": 114, "setresuid": 117, "setresgid": 119, "setgroups": 116, "setfsuid": 122, "setfsgid": 123, "setsid": 112, "setpgid": 109, "iopl": 172, "ioperm": 173, "syslog": 103, "vhangup": 153, "uselib": 134, "sysfs": 139, "migrate_pages": 256, "move_pages": 279, "fanotify_init": 300, "process_madvise": 440, "process_mrelease": 448, "mknod": 133, "mknodat": 259, "create_module": 174, "get_kernel_syms": 177, "query_module": 178, "nfsservctl": 180, "clone": 56, "clone3": 435, "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "ioctl": 16, "personality": 135, "prlimit64": 302, "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "utime": 132, "utimes": 235, "futimesat": 261, "utimensat": 280, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "setxattrat": 463, "removexattrat": 466}  # noqa: E501
AARCH64 = {"execve": 221, "execveat": 281, "ptrace": 117, "socket": 198, "socketpair": 199, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89, "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266, "adjtimex": 171, "keyctl": 219, "add_key": 217, "request_key": 218, "quotactl": 60, "quotactl_fd": 443, "lookup_dcookie": 18, "open_by_handle_at": 265, "name_to_handle_at": 264, "fchown": 55, "fchownat": 54, "setuid": 146, "setgid": 144, "setreuid": 145, "setregid": 143, "setresuid": 147, "setresgid": 149, "setgroups": 159, "setfsuid": 151, "setfsgid": 152, "setsid": 157, "setpgid": 154, "syslog": 116, "vhangup": 58, "migrate_pages": 238, "move_pages": 239, "fanotify_init": 262, "process_madvise": 440, "process_mrelease": 448, "mknodat": 33, "nfsservctl": 42, "clone": 220, "clone3": 435, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "ioctl": 29, "personality": 92, "prlimit64": 261, "fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "utimensat": 88, "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16, "setxattrat": 463, "removexattrat": 466}  # noqa: E501

ARCHES = {
    "x86_64": (0xC000003E, X86_64),     # AUDIT_ARCH_X86_64
    "aarch64": (0xC00000B7, AARCH64),   # AUDIT_ARCH_AARCH64
}

# Calls that are simply denied (EPERM). Everything named here that an architecture lacks is skipped.
DENIED = (
    "execve", "execveat", "fork", "vfork", "ptrace", "socket", "process_vm_readv",
    "process_vm_writev", "kcmp", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "mount",
    "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "keyctl", "add_key",
    "request_key", "quotactl", "quotactl_fd", "lookup_dcookie", "open_by_handle_at",
    "name_to_handle_at", "chown", "fchown", "lchown", "fchownat", "setuid", "setgid", "setreuid",
    "setregid", "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid", "setsid", "setpgid",
    "iopl", "ioperm", "syslog", "vhangup", "uselib", "sysfs", "migrate_pages", "move_pages",
    "fanotify_init", "process_madvise", "process_mrelease", "mknod", "mknodat", "create_module",
    "get_kernel_syms", "query_module", "nfsservctl", "tkill",
    # Landlock does not cover metadata: permissions, times and xattrs of files the worker may read.
    "chmod", "fchmod", "fchmodat", "fchmodat2", "utime", "utimes", "futimesat", "utimensat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "setxattrat", "removexattrat",
)

CLONE_THREAD = 0x00010000
CLONE_NS_FLAGS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
                  | 0x40000000 | 0x00000080)   # NEWNS CGROUP UTS IPC USER PID NET TIME
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
AF_UNIX = 1
EPERM = 1
ENOSYS = 38

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# BPF opcodes
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

OFF_NR = 0
OFF_ARCH = 4


def _arg_lo(i: int) -> int:
    return 16 + 8 * i        # low 32 bits of args[i] (little-endian on both architectures)


class _Asm:
    def __init__(self) -> None:
        self.ins: list[tuple[int, Any, Any, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.ins)

    def op(self, code: int, k: int = 0, jt: Any = 0, jf: Any = 0) -> None:
        self.ins.append((code, jt, jf, k & 0xFFFFFFFF))

    def assemble(self) -> bytes:
        out = bytearray()
        for i, (code, jt, jf, k) in enumerate(self.ins):
            def rel(t: Any, i: int = i) -> int:
                if isinstance(t, int):
                    return t
                off = self.labels[t] - (i + 1)
                if not 0 <= off <= 255:
                    raise ValueError(f"BPF jump to {t} out of range ({off})")
                return off
            out += struct.pack("=HBBI", code, rel(jt), rel(jf), k)
        return bytes(out)


def build_filter(machine: str, self_pid: int) -> tuple[bytes, int]:
    """The filter program for ``machine`` (``os.uname().machine``); returns (bytes, count)."""
    if machine not in ARCHES:
        raise ValueError(f"no seccomp syscall table for {machine}")
    audit_arch, table = ARCHES[machine]
    a = _Asm()
    a.op(LD_W_ABS, OFF_ARCH)
    a.op(JEQ_K, audit_arch, 0, "kill")
    a.op(LD_W_ABS, OFF_NR)
    if machine == "x86_64":
        a.op(JGE_K, 0x40000000, "kill", 0)          # x32 ABI numbers
    for name in DENIED:
        if name in table:
            a.op(JEQ_K, table[name], "eperm", 0)
    a.op(JEQ_K, table["clone3"], "enosys", 0)
    a.op(JEQ_K, table["clone"], "clone", 0)
    for name in ("kill", "rt_sigqueueinfo", "tgkill", "rt_tgsigqueueinfo", "prlimit64"):
        a.op(JEQ_K, table[name], "self_arg0", 0)
    a.op(JEQ_K, table["ioctl"], "ioctl", 0)
    a.op(JEQ_K, table["socketpair"], "socketpair", 0)
    a.op(JEQ_K, table["personality"], "personality", 0)
    a.op(RET_K, RET_ALLOW)

    a.label("clone")             # threads only: CLONE_THREAD set, no namespace flags
    a.op(LD_W_ABS, _arg_lo(0))
    a.op(JSET_K, CLONE_THREAD, 0, "eperm")
    a.op(JSET_K, CLONE_NS_FLAGS, "eperm", "allow")

    a.label("self_arg0")         # kill/tgkill/sigqueue/prlimit: only this process (or 0 for prlimit)
    a.op(LD_W_ABS, _arg_lo(0))
    a.op(JEQ_K, self_pid, "allow", 0)
    a.op(LD_W_ABS, OFF_NR)
    a.op(JEQ_K, table["prlimit64"], 0, "eperm")
    a.op(LD_W_ABS, _arg_lo(0))
    a.op(JEQ_K, 0, "allow", "eperm")

    a.label("ioctl")             # ioctl's cmd is an unsigned int: the low word is all of it
    a.op(LD_W_ABS, _arg_lo(1))
    a.op(JEQ_K, TIOCSTI, "eperm", 0)
    a.op(JEQ_K, TIOCLINUX, "eperm", "allow")

    a.label("socketpair")
    a.op(LD_W_ABS, _arg_lo(0))
    a.op(JEQ_K, AF_UNIX, "allow", "eperm")

    a.label("personality")       # query only (0xffffffff); changing it could e.g. disable ASLR
    a.op(LD_W_ABS, _arg_lo(0))
    a.op(JEQ_K, 0xFFFFFFFF, "allow", "eperm")

    a.label("allow")
    a.op(RET_K, RET_ALLOW)
    a.label("eperm")
    a.op(RET_K, RET_ERRNO | EPERM)
    a.label("enosys")
    a.op(RET_K, RET_ERRNO | ENOSYS)
    a.label("kill")
    a.op(RET_K, RET_KILL_PROCESS)
    prog = a.assemble()
    return prog, len(a.ins)


def install(libc: Any, machine: str, self_pid: int) -> int:
    """Install the filter on the calling thread (call before any other thread exists).

    Returns the number of BPF instructions. Raises OSError on failure."""
    import ctypes
    import os

    prog, count = build_filter(machine, self_pid)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(count, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(38, 1, 0, 0, 0) != 0:                        # PR_SET_NO_NEW_PRIVS
        e = ctypes.get_errno()
        raise OSError(e, f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(e)}")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:      # PR_SET_SECCOMP, FILTER
        e = ctypes.get_errno()
        raise OSError(e, f"installing the seccomp filter failed: {os.strerror(e)}")
    return count
