"""The attack suite's cases: hostile model code, one small snippet each, and what stops it.

Used by tests/sandbox/attack_runner.py (runs them confined, through the engine) and by
tests/sandbox/test_attacks.py (judges host-side evidence). ``@NAME@`` tokens are filled in by the
runner: @MARKER@ a file that must never exist, @VICTIM@ a host file that must not change, @SSH_KEY@
@APP_CONFIG@ @KEYRING@ files holding the canary secret, @HOST_PID@ the engine's process,
@VICTIM_PID@ a bystander process of the host's, @TCP_PORT@ @UDP_PORT@ @UNIX_PATH@ @ABSTRACT@
listeners that must receive nothing, @WORKER_PY@ the worker's code, @HOME@ the fake home.
"""

from __future__ import annotations

from dataclasses import dataclass

SECCOMP = "seccomp"
LANDLOCK = "landlock"
NAMESPACES = "namespaces"


@dataclass(frozen=True)
class Attack:
    name: str
    category: str
    code: str
    # Layers whose absence would let this attack through (the test skips, naming them and the level,
    # when one is missing): any one of ``needs_any`` suffices.
    needs_any: tuple[str, ...] = (SECCOMP, LANDLOCK, NAMESPACES)
    cell_timeout_s: float = 4.0
    expect_restart: bool = False      # the worker must be killed/restarted (timeouts, crashes)


ATTACKS: list[Attack] = [
    # -- secrets and files -----------------------------------------------------------------------
    Attack("read_ssh_key", "files", "print(open('@SSH_KEY@').read())", (LANDLOCK,)),
    Attack("walk_home", "files", """
import os
for root, dirs, files in os.walk('@HOME@'):
    for f in files:
        try: print(open(os.path.join(root, f)).read())
        except Exception as e: print('no', e)
print(os.listdir('@HOME@'))
""", (LANDLOCK,)),
    Attack("read_app_config", "files", "print(open('@APP_CONFIG@').read())", (LANDLOCK,)),
    Attack("read_keyring_file", "files", "print(open('@KEYRING@', 'rb').read())", (LANDLOCK,)),
    Attack("host_environ", "files", "print(open('/proc/@HOST_PID@/environ', 'rb').read())", (LANDLOCK,)),
    Attack("host_mem_scan", "files", """
import re
maps = open('/proc/@HOST_PID@/maps').read().splitlines()
with open('/proc/@HOST_PID@/mem', 'rb', 0) as mem:
    for line in maps:
        lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
        try:
            mem.seek(lo); blob = mem.read(min(hi - lo, 1 << 24))
        except OSError:
            continue
        for m in re.finditer(rb'sk-[A-Za-z0-9-]{10,60}', blob):
            print(m.group())
""", (LANDLOCK,)),
    Attack("own_environment", "files", "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ','rb').read())",
           ()),
    Attack("read_shadow", "files", "print(open('/etc/shadow').read())", (LANDLOCK,)),
    Attack("write_victim", "files", "open('@VICTIM@', 'w').write('pwned')", (LANDLOCK,)),
    Attack("delete_victim", "files", "import os\nos.remove('@VICTIM@')", (LANDLOCK,)),
    Attack("chmod_victim", "files", "import os\nos.chmod('@VICTIM@', 0o777)", (LANDLOCK, SECCOMP)),
    Attack("chown_victim", "files", "import os\nos.chown('@VICTIM@', 12345, 12345)", (SECCOMP,)),
    Attack("rename_victim", "files", "import os\nos.rename('@VICTIM@', '@VICTIM@.moved')", (LANDLOCK,)),
    Attack("hardlink_victim", "files", """
import os
os.link('@VICTIM@', 'hl')
open('hl', 'w').write('pwned')
""", (LANDLOCK, NAMESPACES)),
    Attack("symlink_to_secret", "files", """
import os
os.symlink('@SSH_KEY@', 'key')
print(open('key').read())
""", (LANDLOCK,)),
    Attack("symlink_victim_write", "files", """
import os
os.symlink('@VICTIM@', 'v')
open('v', 'w').write('pwned')
""", (LANDLOCK,)),
    Attack("tamper_worker_code", "files", "open('@WORKER_PY@', 'a').write('\\n# pwned\\n')", (LANDLOCK,)),
    Attack("write_outside_scratch", "files", "open('@MARKER@', 'w').write('pwned')", (LANDLOCK,)),
    # -- execution -------------------------------------------------------------------------------
    Attack("os_system", "exec", "import os\nprint(os.system('touch @MARKER@'))", (SECCOMP,)),
    Attack("subprocess_run", "exec", "import subprocess\nsubprocess.run(['touch', '@MARKER@'])", (SECCOMP,)),
    Attack("os_execv", "exec", "import os\nos.execv('/usr/bin/touch', ['touch', '@MARKER@'])", (SECCOMP,)),
    Attack("posix_spawn", "exec", "import os\nos.posix_spawn('/usr/bin/touch', ['touch', '@MARKER@'], {})",
           (SECCOMP,)),
    Attack("ctypes_system", "exec", "import ctypes\nprint(ctypes.CDLL(None).system(b'touch @MARKER@'))",
           (SECCOMP,)),
    Attack("memfd_exec", "exec", """
import os
fd = os.memfd_create('x')
os.write(fd, open('/usr/bin/touch', 'rb').read())
os.execve(fd, ['touch', '@MARKER@'], {})
""", (SECCOMP,)),
    Attack("subclasses_escape", "exec", """
for c in ().__class__.__base__.__subclasses__():
    if c.__name__ == '_wrap_close':
        c.__init__.__globals__['system']('touch @MARKER@')
""", (SECCOMP,)),
    Attack("webbrowser", "exec", """
import webbrowser
print(webbrowser.open('http://127.0.0.1:@TCP_PORT@/opened'))
""", (SECCOMP,)),
    Attack("fork_and_write", "exec", """
import os
pid = os.fork()
if pid == 0:
    os.execv('/usr/bin/touch', ['touch', '@MARKER@'])
""", (SECCOMP,)),
    # -- resources -------------------------------------------------------------------------------
    Attack("fork_bomb", "resources", "import os\nwhile True:\n    os.fork()", (SECCOMP,)),
    Attack("orphan_via_setsid", "resources", """
import os, time
os.setsid()
if os.fork() == 0:
    time.sleep(1000)
""", (SECCOMP,)),
    Attack("thread_bomb", "resources", """
import threading, time
while True:
    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
""", ()),
    Attack("memory_bomb", "resources", "x = ' ' * (64 * 1024**3)", ()),
    Attack("memory_growth", "resources", "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024**2))", ()),
    Attack("cpu_loop", "resources", "while True:\n    pass", (), cell_timeout_s=1.0, expect_restart=True),
    Attack("sleep_forever", "resources", "import time\ntime.sleep(10**6)", (), cell_timeout_s=1.0,
           expect_restart=True),
    Attack("ignore_sigterm", "resources", """
import signal
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    pass
""", (), cell_timeout_s=1.0, expect_restart=True),
    Attack("deep_recursion", "resources", """
import sys
sys.setrecursionlimit(10**7)
def f(n):
    return f(n + 1) + 1
f(0)
""", (), cell_timeout_s=2.0),
    Attack("huge_file", "resources", """
block = b'x' * (1 << 20)
with open('huge.bin', 'wb') as f:
    for _ in range(4096):
        f.write(block)
""", (NAMESPACES,)),
    Attack("many_files", "resources", """
import os
for i in range(200000):
    open(f'f{i}', 'w').close()
""", (NAMESPACES,), cell_timeout_s=6.0),
    Attack("tmp_fill", "resources", """
with open('/tmp/rlm-attack-fill-@NONCE@', 'wb') as f:
    for _ in range(1024):
        f.write(b'x' * (1 << 20))
""", (LANDLOCK,)),
    Attack("fd_exhaustion", "resources", """
fds = []
while True:
    fds.append(open('/dev/null'))
""", ()),
    Attack("output_flood", "resources", """
import sys
line = 'y' * 10000 + '\\n'
for _ in range(100000):
    sys.stdout.write(line)
""", ()),
    # -- network ---------------------------------------------------------------------------------
    Attack("tcp_localhost", "network", """
import socket
s = socket.create_connection(('127.0.0.1', @TCP_PORT@), timeout=2)
s.sendall(b'pwned')
""", (SECCOMP, NAMESPACES)),
    Attack("dns_lookup", "network", """
import socket
print(socket.getaddrinfo('example.com', 80))
""", (SECCOMP, NAMESPACES)),
    Attack("dns_packet_to_local_resolver", "network", """
import socket
q = b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01'
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(q, ('127.0.0.1', @UDP_PORT@))
""", (SECCOMP, NAMESPACES)),
    Attack("udp_send", "network", """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b'pwned', ('127.0.0.1', @UDP_PORT@))
""", (SECCOMP, NAMESPACES)),
    Attack("unix_path_socket", "network", """
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect('@UNIX_PATH@')
s.sendall(b'pwned')
""", (SECCOMP, LANDLOCK)),
    Attack("abstract_socket", "network", """
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect('\\0@ABSTRACT@')
s.sendall(b'pwned')
""", (SECCOMP, LANDLOCK, NAMESPACES)),
    Attack("raw_syscall_socket", "network", """
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.syscall(41, 2, 1, 0)          # socket(AF_INET, SOCK_STREAM) on x86_64
addr = struct.pack('<HH4s8x', 2, __import__('socket').htons(@TCP_PORT@), bytes([127, 0, 0, 1]))
print(fd, libc.connect(fd, addr, 16), libc.write(fd, b'pwned', 5))
""", (SECCOMP, NAMESPACES)),
    Attack("socketpair_is_local_only", "network", """
import socket
a, b = socket.socketpair()
a.sendall(b'ok'); print(b.recv(2))
socket.socketpair(socket.AF_INET)
""", (SECCOMP,)),
    # -- attacks on the app ----------------------------------------------------------------------
    Attack("signal_host", "app", "import os, signal\nos.kill(@HOST_PID@, signal.SIGKILL)", (SECCOMP, NAMESPACES)),
    Attack("signal_bystander", "app", "import os, signal\nos.kill(@VICTIM_PID@, signal.SIGKILL)",
           (SECCOMP, NAMESPACES)),
    Attack("kill_minus_one", "app", "import os, signal\nos.kill(-1, signal.SIGKILL)", (SECCOMP, NAMESPACES)),
    Attack("kill_process_group", "app", "import os, signal\nos.killpg(0, signal.SIGKILL)", (SECCOMP,)),
    Attack("pidfd_signal", "app", """
import os, signal
fd = os.pidfd_open(@VICTIM_PID@)
signal.pidfd_send_signal(fd, signal.SIGKILL)
""", (SECCOMP, NAMESPACES)),
    Attack("ptrace_attach", "app", """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.ptrace(16, @VICTIM_PID@, 0, 0), ctypes.get_errno())   # PTRACE_ATTACH
print(libc.ptrace(16, @HOST_PID@, 0, 0), ctypes.get_errno())
""", (SECCOMP,)),
    Attack("raise_limits", "app", """
import resource
for r in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_FSIZE):
    try:
        resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError) as e:
        print('refused', e)
""", ()),
    Attack("new_user_namespace", "app", """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.unshare(0x10000000 | 0x00020000), ctypes.get_errno())   # CLONE_NEWUSER | CLONE_NEWNS
""", (SECCOMP,)),
    Attack("remount_scratch", "app", """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print(libc.umount2(os.getcwd().encode(), 2), ctypes.get_errno())   # MNT_DETACH
print(libc.mount(b'none', b'/', b'tmpfs', 0, None), ctypes.get_errno())
""", (SECCOMP,)),
    Attack("tiocsti", "app", """
import fcntl, termios, os
for path in ('/dev/tty', '/dev/console'):
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as e:
        print('open', path, e); continue
    for ch in b'touch @MARKER@\\n':
        fcntl.ioctl(fd, termios.TIOCSTI, bytes([ch]))
fcntl.ioctl(0, termios.TIOCSTI, b'x')
""", (SECCOMP, LANDLOCK)),
    Attack("io_uring_and_bpf", "app", """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.syscall(425, 8, ctypes.create_string_buffer(120)), ctypes.get_errno())   # io_uring_setup
print(libc.syscall(321, 0, ctypes.create_string_buffer(128), 128), ctypes.get_errno())   # bpf
""", (SECCOMP,)),
    # -- protocol abuse --------------------------------------------------------------------------
    Attack("close_pipes", "protocol", """
import os
for fd in range(0, 256):
    try: os.close(fd)
    except OSError: pass
""", (), expect_restart=True),
    Attack("forged_frames", "protocol", """
import os, json
def frame(obj):
    b = json.dumps(obj).encode()
    return len(b).to_bytes(4, 'big') + b
junk = frame({'t': 'done', 'cell': 10**6, 'ok': True, 'final': {'value': 'FORGED-ANSWER', 'via': 'FINAL'}})
junk += frame({'t': 'resp', 'id': 1, 'ok': True, 'value': 'x'})
for fd in range(3, 64):
    try: os.write(fd, junk)
    except OSError: pass
import time; time.sleep(5)
""", (), expect_restart=True),
    Attack("steal_own_responses", "protocol", """
import os
for fd in range(3, 64):
    try: os.set_blocking(fd, False); os.read(fd, 1 << 16)
    except OSError: pass
print(llm_query('still works?'))
""", ()),
    Attack("os_exit", "protocol", "import os\nos._exit(0)", (), expect_restart=True),
    Attack("segfault", "protocol", "import ctypes\nctypes.string_at(0)", (), expect_restart=True),
]

NAMES = [a.name for a in ATTACKS]
assert len(set(NAMES)) == len(NAMES)
