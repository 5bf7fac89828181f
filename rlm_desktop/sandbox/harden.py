"""Isolation layers the worker applies to itself before any untrusted code exists in it.

Runs inside the worker (stdlib + ctypes only). ``apply`` returns what it put in force; the host
cross-checks that from outside (``/proc/<pid>/status``, namespace inodes, a Landlock probe).
Order: resource limits → user/net/pid/mount/ipc/uts namespaces (fork: the child is PID 1) →
private size-capped tmpfs scratch as CWD → capabilities dropped → Landlock → seccomp.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class HardeningError(RuntimeError):
    """A layer that the host asked for could not be put in force (``layer`` names it)."""

    def __init__(self, message: str, layer: str = "") -> None:
        super().__init__(message)
        self.layer = layer


_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_SECCOMP = 22
PR_GET_SECCOMP = 21
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

# Landlock (include/uapi/linux/landlock.h); syscall numbers are the same on every architecture.
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LL_EXECUTE = 1 << 0
LL_WRITE_FILE = 1 << 1
LL_READ_FILE = 1 << 2
LL_READ_DIR = 1 << 3
LL_REMOVE_DIR = 1 << 4
LL_REMOVE_FILE = 1 << 5
LL_MAKE_CHAR = 1 << 6
LL_MAKE_DIR = 1 << 7
LL_MAKE_REG = 1 << 8
LL_MAKE_SOCK = 1 << 9
LL_MAKE_FIFO = 1 << 10
LL_MAKE_BLOCK = 1 << 11
LL_MAKE_SYM = 1 << 12
LL_REFER = 1 << 13          # ABI 2
LL_TRUNCATE = 1 << 14       # ABI 3
LL_IOCTL_DEV = 1 << 15      # ABI 5
LL_FILE_RIGHTS = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | LL_IOCTL_DEV
LL_READ = LL_READ_FILE | LL_READ_DIR
LL_SCRATCH = (LL_READ | LL_WRITE_FILE | LL_REMOVE_DIR | LL_REMOVE_FILE | LL_MAKE_DIR | LL_MAKE_REG
              | LL_MAKE_SYM | LL_REFER | LL_TRUNCATE)
LL_NET_BIND_TCP = 1
LL_NET_CONNECT_TCP = 2
LL_SCOPE_ABSTRACT_UNIX = 1  # ABI 6
LL_SCOPE_SIGNAL = 2         # ABI 6


def die_with_parent(host_pid: int) -> None:
    """Get SIGKILL when the parent dies (Linux), and bail out if it is already gone."""
    if sys.platform.startswith("linux"):
        libc().prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if os.getppid() != host_pid:
        os._exit(0)


def apply_rlimits(limits: dict[str, Any], *, nproc: bool) -> dict[str, Any]:
    """Set soft = hard = the configured value (never above an existing hard limit)."""
    import resource

    mb = 1024 * 1024
    wanted = {
        "RLIMIT_AS": int(limits["memory_mb"]) * mb,
        "RLIMIT_CPU": int(limits["cpu_s"]),
        "RLIMIT_FSIZE": int(limits["max_file_mb"]) * mb,
        "RLIMIT_NOFILE": int(limits["max_open_files"]),
        "RLIMIT_CORE": 0,
    }
    if nproc:
        wanted = {"RLIMIT_NPROC": int(limits["max_processes"])}
    applied: dict[str, Any] = {}
    for name, value in wanted.items():
        res = getattr(resource, name, None)
        if res is None:
            continue
        _soft, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY and hard < value:
            value = hard
        try:
            resource.setrlimit(res, (value, value))
        except (OSError, ValueError):
            continue            # e.g. RLIMIT_AS on macOS: reported as not applied
        applied[name] = value
    return applied


# -- namespaces ----------------------------------------------------------------------------------

def enter_namespaces(send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """unshare user+mnt+net+pid+ipc+uts+cgroup, map our ids, fork. The parent becomes a tiny
    launcher (reports the child's pid, waits, mirrors its exit) and never returns; the child,
    PID 1 of the new PID namespace, returns. Returns {} (nothing entered) when not permitted."""
    uid, gid = os.getuid(), os.getgid()
    flags = (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC
             | CLONE_NEWUTS | CLONE_NEWCGROUP)
    if libc().unshare(flags) != 0:
        return {"error": f"unshare: {os.strerror(_errno())}"}
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    except OSError as exc:
        raise HardeningError(f"could not map ids in the new user namespace: {exc}", layer="namespaces") from None
    pid = os.fork()
    if pid:
        _launcher(pid, send)
    libc().prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)   # dies with the launcher (which dies with the host)
    return {"user": True, "mnt": True, "net": True, "pid": True, "ipc": True, "uts": True}


def _launcher(child: int, send: Callable[[dict[str, Any]], None]) -> None:
    send({"t": "spawned", "pid": child})
    os.closerange(0, 65536)          # hold no pipe: the host sees EOF when the child dies
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(70)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70)


def mount_scratch(path: str, size_mb: int) -> None:
    """Make our mount tree private and put a size-capped tmpfs on the scratch directory."""
    c = libc()
    if c.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise HardeningError(f"could not make the mount tree private: {os.strerror(_errno())}", layer="namespaces")
    opts = f"size={int(size_mb)}m,nr_inodes=65536,mode=0700".encode()
    if c.mount(b"rlm-scratch", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) != 0:
        raise HardeningError(f"could not mount the scratch tmpfs: {os.strerror(_errno())}", layer="namespaces")


def drop_capabilities() -> None:
    """Empty every capability set (we hold all of them inside our user namespace until now)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    for cap in range(64):              # the bounding set first (needs CAP_SETPCAP, dropped below)
        if libc().prctl(24, cap, 0, 0, 0) != 0:   # PR_CAPBSET_DROP; EINVAL past the last cap
            break
    hdr = Header(0x20080522, 0)        # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if libc().capset(ctypes.byref(hdr), data) != 0:
        raise HardeningError(f"could not drop capabilities: {os.strerror(_errno())}", layer="namespaces")


# -- Landlock ------------------------------------------------------------------------------------

def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is unavailable."""
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    v = libc().syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                       ctypes.c_uint32(1))
    return v if v > 0 else 0


def apply_landlock(read_paths: list[str], rw_paths: list[str], dev_paths: list[str]) -> dict[str, Any]:
    import ctypes

    abi = landlock_abi()
    if abi <= 0:
        return {"abi": 0, "enforced": False, "error": "Landlock is not available in this kernel"}
    fs = (1 << 13) - 1
    if abi >= 2:
        fs |= LL_REFER
    if abi >= 3:
        fs |= LL_TRUNCATE
    if abi >= 5:
        fs |= LL_IOCTL_DEV
    net = (LL_NET_BIND_TCP | LL_NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL) if abi >= 6 else 0

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = RulesetAttr(fs, net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    c = libc()
    rfd = c.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr),
                    ctypes.c_size_t(size), ctypes.c_uint32(0))
    if rfd < 0:
        return {"abi": abi, "enforced": False,
                "error": f"landlock_create_ruleset: {os.strerror(_errno())}"}
    rules = 0
    try:
        wanted = ([(p, LL_READ) for p in read_paths] + [(p, LL_SCRATCH) for p in rw_paths]
                  + [(p, LL_READ_FILE | LL_WRITE_FILE) for p in dev_paths])
        for path, access in wanted:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue                      # absent on this machine: nothing to allow
            try:
                if not os.path.isdir(path):
                    access &= LL_FILE_RIGHTS
                rule = PathBeneath(access & fs, pfd)
                if c.syscall(ctypes.c_long(SYS_LANDLOCK_ADD_RULE), ctypes.c_int(rfd), ctypes.c_int(1),
                             ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise HardeningError(f"landlock_add_rule({path}): {os.strerror(_errno())}")
                rules += 1
            finally:
                os.close(pfd)
        if c.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise HardeningError(f"PR_SET_NO_NEW_PRIVS: {os.strerror(_errno())}")
        if c.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(rfd), ctypes.c_uint32(0)) != 0:
            raise HardeningError(f"landlock_restrict_self: {os.strerror(_errno())}")
    finally:
        os.close(rfd)
    return {"abi": abi, "enforced": True, "rules": rules, "net": bool(net),
            "scoped": [s for s, b in (("abstract_unix", 1), ("signal", 2)) if scoped & b]}


def _probe(path: str | None) -> str:
    """Try to read the host's probe file, which no rule allows: 'denied' proves Landlock works."""
    if not path:
        return "absent"
    try:
        with open(path, encoding="utf-8") as f:
            return "read:" + f.read(200)
    except PermissionError:
        return "denied"
    except OSError as exc:
        return f"error:{exc.errno}"


def _socket_denied() -> bool:
    """socket(AF_INET, SOCK_STREAM) must fail with EPERM once the filter is in force."""
    fd = libc().socket(2, 1, 0)
    if fd >= 0:
        os.close(fd)
        return False
    return _errno() == 1


def apply(init: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply every layer the host asked for; return what is in force (``report`` of the ready frame).

    Only the process that will run model code returns (with namespaces, the child)."""
    report: dict[str, Any] = {"platform": sys.platform}
    layers = init.get("layers", {})
    limits = init["limits"]
    scratch = init["scratch"]
    try:
        report["rlimits"] = apply_rlimits(limits, nproc=False)
    except (OSError, ValueError, KeyError) as exc:
        raise HardeningError(f"resource limits could not be set: {exc}") from None
    if not sys.platform.startswith("linux"):
        os.chdir(scratch)
        return report

    ns: dict[str, Any] = {}
    if layers.get("namespaces"):
        ns = enter_namespaces(send)       # {"error": …} when unshare is refused: nothing changed
    report["namespaces"] = ns
    if ns.get("mnt"):
        # Past unshare there is no way back: a failure here makes the host retry without namespaces.
        if init.get("simulate_failure") == "namespaces":
            raise HardeningError("simulated failure after unshare (test)", layer="namespaces")
        mount_scratch(scratch, limits["scratch_mb"])
        report["scratch"] = "tmpfs"
    else:
        report["scratch"] = "directory"
    os.chdir(scratch)
    if ns.get("user"):
        report["rlimits"].update(apply_rlimits(limits, nproc=True))
    # Every capability goes, with or without a user namespace: a worker started by root must not
    # keep e.g. CAP_SYS_RESOURCE (it could raise its own limits) or CAP_DAC_OVERRIDE.
    try:
        drop_capabilities()
    except HardeningError as exc:
        raise HardeningError(str(exc), layer="namespaces" if ns.get("user") else "") from None
    report["capabilities"] = "dropped"

    if layers.get("landlock"):
        try:
            report["landlock"] = apply_landlock(init.get("read_paths", []), [scratch],
                                                init.get("dev_paths", []))
        except HardeningError as exc:
            report["landlock"] = {"enforced": False, "error": str(exc)}
        report["landlock"]["probe"] = _probe(init.get("probe"))

    if layers.get("seccomp"):
        from rlm_desktop.sandbox import seccomp

        try:
            n = seccomp.install(libc(), os.uname().machine, os.getpid())
            report["seccomp"] = {"installed": True, "instructions": n,
                                 "socket_denied": _socket_denied()}
        except (OSError, ValueError) as exc:
            report["seccomp"] = {"installed": False, "error": str(exc)}
    c = libc()
    report["no_new_privs"] = c.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1
    report["seccomp_mode"] = c.prctl(PR_GET_SECCOMP, 0, 0, 0, 0)
    return report
