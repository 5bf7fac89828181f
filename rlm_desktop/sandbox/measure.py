"""Measure from the host which isolation layers are really in force in a worker, and rate them.

The worker's own report is only believed where the host can confirm it: ``/proc/<pid>/status``
(Seccomp, NoNewPrivs), namespace inodes, the scratch tmpfs in the worker's mountinfo, and a
Landlock probe file whose secret content must not come back.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rlm_desktop.sandbox.api import IsolationLevel, IsolationReport
from rlm_desktop.sandbox.harden import landlock_abi

NAMESPACES = ("user", "net", "pid", "mnt")


def proc_status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def namespace_differs(pid: int, name: str) -> bool | None:
    """True when ``pid`` is in another ``name`` namespace than this process; None if unreadable."""
    try:
        return os.stat(f"/proc/{pid}/ns/{name}").st_ino != os.stat(f"/proc/self/ns/{name}").st_ino
    except OSError:
        return None


def scratch_is_tmpfs(pid: int, scratch: str) -> bool:
    try:
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and fields[4] == scratch and right.split()[:1] == ["tmpfs"]:
                    return True
    except OSError:
        pass
    return False


def measure_isolation(launcher_pid: int | None, inner_pid: int | None, ready: dict[str, Any], *,
                      scratch: str, probe_token: str) -> IsolationReport:
    rep = ready.get("report")
    rep = rep if isinstance(rep, dict) else {}
    layers: dict[str, Any] = {}
    pid = inner_pid if inner_pid is not None else launcher_pid
    if inner_pid is not None and launcher_pid is not None and _parent_of(inner_pid) != launcher_pid:
        pid = None          # the reported pid is not our launcher's child: trust nothing about it
    rl = rep.get("rlimits")
    layers["rlimits"] = sorted(rl) if isinstance(rl, dict) else []

    if not sys.platform.startswith("linux") or pid is None:
        return _rate(layers, seccomp_ok=False, landlock_ok=False, ns_ok=False)

    status = proc_status(pid)
    layers["capabilities"] = {k: status.get(k) for k in ("CapEff", "CapPrm", "CapBnd")}
    layers["capabilities"]["none"] = status.get("CapEff", "").strip("0") == "" \
        and status.get("CapPrm", "").strip("0") == ""
    sc = rep.get("seccomp") if isinstance(rep.get("seccomp"), dict) else {}
    seccomp_ok = (status.get("Seccomp") == "2" and status.get("NoNewPrivs") == "1"
                  and sc.get("installed") is True and sc.get("socket_denied") is True)
    layers["seccomp"] = {"in_force": seccomp_ok, "mode": status.get("Seccomp"),
                         "filters": status.get("Seccomp_filters"),
                         "no_new_privs": status.get("NoNewPrivs") == "1"}
    if sc.get("error"):
        layers["seccomp"]["error"] = str(sc["error"])[:300]

    kernel_abi = landlock_abi()
    ll = rep.get("landlock") if isinstance(rep.get("landlock"), dict) else {}
    leaked = bool(probe_token) and probe_token in json.dumps(ready)
    landlock_ok = (ll.get("enforced") is True and kernel_abi > 0 and ll.get("abi") == kernel_abi
                   and ll.get("probe") == "denied" and not leaked)
    layers["landlock"] = {"in_force": landlock_ok, "abi": ll.get("abi", 0), "kernel_abi": kernel_abi,
                          "probe": "denied" if ll.get("probe") == "denied" else "not denied",
                          "tcp_denied": bool(ll.get("net")), "scoped": ll.get("scoped", [])}
    if ll.get("error"):
        layers["landlock"]["error"] = str(ll["error"])[:300]

    ns = {name: namespace_differs(pid, name) for name in NAMESPACES}
    tmpfs = scratch_is_tmpfs(pid, scratch)
    ns_ok = all(v is True for v in ns.values()) and tmpfs
    layers["namespaces"] = {"in_force": ns_ok, **{k: bool(v) for k, v in ns.items()},
                            "scratch_tmpfs": tmpfs}
    nsr = rep.get("namespaces")
    if isinstance(nsr, dict) and nsr.get("error"):
        layers["namespaces"]["error"] = str(nsr["error"])[:300]
    return _rate(layers, seccomp_ok=seccomp_ok, landlock_ok=landlock_ok, ns_ok=ns_ok)


def _rate(layers: dict[str, Any], *, seccomp_ok: bool, landlock_ok: bool, ns_ok: bool) -> IsolationReport:
    if seccomp_ok and landlock_ok and ns_ok:
        level = IsolationLevel.STRONG
        summary = ("Strong: model code runs in its own user, network, PID and mount namespaces with a "
                   "private size-capped scratch disk, under Landlock file/network rules and a seccomp "
                   "syscall filter, with resource limits.")
    elif seccomp_ok and landlock_ok:
        level = IsolationLevel.GOOD
        summary = ("Good: Landlock file/network rules and a seccomp syscall filter are in force, but no "
                   "namespaces (no private scratch quota, no PID namespace).")
    elif seccomp_ok or landlock_ok:
        level = IsolationLevel.WEAK
        only = "a seccomp syscall filter" if seccomp_ok else "Landlock file rules"
        summary = (f"Weak: only {only} is in force; model code could reach "
                   + ("files this user can read." if seccomp_ok else "the network or start programs."))
    else:
        level = IsolationLevel.NONE
        summary = ("None: model code runs in a separate process with resource limits only; it could "
                   "read your files, use the network and start programs.")
    return IsolationReport(level=level, layers=layers, platform=sys.platform, summary=summary)


def refusal_message(report: IsolationReport) -> str:
    missing = [name for name in ("namespaces", "landlock", "seccomp")
               if not (isinstance(report.layers.get(name), dict) and report.layers[name].get("in_force"))]
    why = f" (missing: {', '.join(missing)})" if missing else ""
    return (f"Refusing to run model-written code: sandbox isolation on this machine is only "
            f"'{report.level.value}'{why}. {report.summary} A prompt-injected document could make the "
            "model read or send your files. To run anyway, tick 'Allow runs when only a weak sandbox "
            "is available' (Settings → Sandbox) or pass --allow-weak-sandbox to `rlm-desktop run`.")
