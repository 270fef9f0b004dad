"""Starts Debian's Prosody and ejabberd (or kabard) with their own configs on free loopback ports,
for tests that run the same suite against every server. Each server gets a fresh directory, a
self-signed certificate for `localhost`, in-band registration on, and is stopped (with its epmd
for ejabberd) when the test ends. Nothing here touches the system services.

    with peers.start("prosody", workdir) as srv:
        srv.port, srv.domain
"""
import os
import shutil
import signal
import random
import socket
import subprocess
import tempfile
import time

DOMAIN = "localhost"


_handed_out = set()


def free_port():
    """A loopback port nobody listens on, picked below the kernel's range of ephemeral ports
    (/proc/sys/net/ipv4/ip_local_port_range): a port that bind(0) handed out is in that range,
    and between this call and the server binding it the kernel could give it to another test's
    client socket as its source port (seen: kabard's proxy listener failed with "Address already
    in use"). Never the same port twice in one process: the ports of one server are picked
    before it binds any of them, so a repeat would pass the bind check (seen: test_proxy65 gave
    kabard one port for both its client and its proxy listener)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = max(1024, ephemeral_low - 12000), ephemeral_low - 1
    for _ in range(200):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _handed_out.add(port)
    return port


def make_cert(d):
    key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=" + DOMAIN, "-addext", "subjectAltName=DNS:" + DOMAIN,
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    both = os.path.join(d, "both.pem")
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())
    for p in (key, cert, both):
        os.chmod(p, 0o644)
    return key, cert, both


class EpmdRace(Exception):
    """Our epmd lost its port to another process before it could bind it."""


def wait_listen(port, proc, log, timeout):
    """Waits until the server listens on `port`. A server that fails exits (reported at once with
    its log), so `timeout` only bounds one that hangs while starting: generous, since a loaded
    machine (CI, sanitizer builds beside) can take ejabberd's Erlang VM tens of seconds to boot."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode}):\n" + tail(log))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not listen in time:\n" + tail(log))


def tail(path, n=4000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def stop_proc(proc, timeout=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Peer:
    kind = "?"

    def __init__(self, keep=False, stream_management=False, resume_timeout=None):
        self.stream_management = stream_management  # XEP-0198 on (mod_smacks, mod_stream_mgmt)
        self.resume_timeout = resume_timeout  # seconds a detached session waits to be resumed
        self.dir = tempfile.mkdtemp(prefix=f"kabar-{self.kind}-")
        os.chmod(self.dir, 0o755)
        self.domain = DOMAIN
        self.port = free_port()
        self.keep = keep
        self.procs = []
        self.log_path = os.path.join(self.dir, f"{self.kind}.log")

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            print(f"---- {self.kind} log (tail) ----\n" + tail(self.log_path), flush=True)
        self.stop()

    def stop(self):
        for p in reversed(self.procs):
            stop_proc(p)
        self.procs = []
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


class Prosody(Peer):
    kind = "prosody"

    def start(self):
        key, cert, _ = make_cert(self.dir)
        data = os.path.join(self.dir, "data")
        os.makedirs(data)
        cfg = os.path.join(self.dir, "prosody.cfg.lua")
        with open(cfg, "w") as f:
            f.write(f"""
run_as_root = true
daemonize = false
pidfile = "{self.dir}/prosody.pid"
data_path = "{data}"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "register"; "offline";
                    "posix"; {'"smacks";' if self.stream_management else ''} }}
modules_disabled = {{ "s2s"; }}
allow_registration = true
{f'smacks_hibernation_time = {self.resume_timeout}' if self.resume_timeout else ''}
min_seconds_between_registrations = 0
registration_throttle_max = 1000
c2s_require_encryption = true
authentication = "internal_hashed"
storage = "internal"
ssl = {{ key = "{key}"; certificate = "{cert}"; }}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{self.log_path}" }} }}
VirtualHost "{self.domain}"
""")
        out = open(os.path.join(self.dir, "stdout.log"), "w")
        proc = subprocess.Popen(["prosody", "-F", "--config", cfg], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)
        wait_listen(self.port, proc, self.log_path, 90)


class Ejabberd(Peer):
    kind = "ejabberd"

    def start(self):
        _, _, both = make_cert(self.dir)
        spool = os.path.join(self.dir, "spool")
        os.makedirs(spool)
        cfg = os.path.join(self.dir, "ejabberd.yml")
        with open(cfg, "w") as f:
            f.write(f"""
hosts: ["{self.domain}"]
loglevel: info
certfiles: ["{both}"]
listen:
  - port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
registration_timeout: infinity
auth_method: internal
auth_password_format: scram
acl:
  loopback:
    ip: ["127.0.0.0/8"]
access_rules:
  register:
    allow: all
  local:
    allow: all
  c2s:
    allow: all
shaper_rules:
  c2s_shaper: none
modules:
  mod_roster:
    versioning: true
  mod_register:
    access: register
    ip_access: all
  mod_offline: {{}}
  mod_ping: {{}}
  mod_disco: {{}}
{'  mod_stream_mgmt:' if self.stream_management else ''}
{f'    resume_timeout: {self.resume_timeout}' if self.stream_management and self.resume_timeout
 else ''}
{'    resend_on_timeout: if_offline' if self.stream_management else ''}
""")
        subprocess.run(["chown", "-R", "ejabberd:ejabberd", self.dir], check=True)
        # The port of our own epmd comes from free_port(), so another process (a test opening
        # thousands of client connections beside this one) may take it before epmd binds it:
        # then epmd exits and erl fails with "register/listen error: econnrefused". Each
        # attempt takes a new port; an attempt fails only on that race.
        for attempt in range(5):
            try:
                self._start_node(cfg, spool)
                return
            except EpmdRace as e:
                self._stop_procs()
                if attempt == 4:
                    raise RuntimeError("ejabberd could not register with epmd: %s" % e)

    def _start_node(self, cfg, spool):
        epmd_port = free_port()
        env = {"PATH": "/usr/bin:/bin", "HOME": self.dir, "EJABBERD_CONFIG_PATH": cfg,
               "EJABBERD_LOG_PATH": self.log_path, "ERL_LIBS": "/usr/lib/x86_64-linux-gnu",
               "ERL_EPMD_PORT": str(epmd_port), "LANG": "C.UTF-8"}
        # Our own epmd on its own port, so it can be ended by its pid.
        epmd = subprocess.Popen(["setpriv", "--reuid=ejabberd", "--regid=ejabberd",
                                 "--clear-groups", "epmd", "-port", str(epmd_port)], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(epmd)
        # erl gives up at once if epmd is not listening yet: wait until ours answers (asking it
        # for its names, so an unrelated listener on the port does not count).
        deadline = time.monotonic() + 20
        while True:
            if epmd.poll() is not None:
                raise EpmdRace("epmd on port %d exited (%s)" % (epmd_port, epmd.returncode))
            names = subprocess.run(["epmd", "-port", str(epmd_port), "-names"], env=env,
                                   capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if names.returncode == 0 and "up and running" in names.stdout:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("epmd on port %d did not answer in time" % epmd_port)
            time.sleep(0.05)
        log = os.path.join(self.dir, "stdout.log")
        out = open(log, "w")
        name = f"kabar{self.port}@localhost"
        proc = subprocess.Popen(
            ["setpriv", "--reuid=ejabberd", "--regid=ejabberd", "--clear-groups", "erl",
             "-sname", name, "-noshell", "-noinput", "-mnesia", "dir", f'"{spool}"',
             "-s", "ejabberd"], env=env, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        try:
            wait_listen(self.port, proc, log, 150)
        except RuntimeError as e:
            if "register/listen error" in str(e):
                raise EpmdRace("%s (epmd %s)" % (e, "exited" if epmd.poll() is not None
                                                   else "running"))
            raise

    def _stop_procs(self):
        # erl ends on SIGTERM in OTP 25; its process group holds its helpers too.
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs = []

    def stop(self):
        self._stop_procs()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def start(kind, keep=False, stream_management=False, resume_timeout=None):
    return {"prosody": Prosody, "ejabberd": Ejabberd}[kind](
        keep=keep, stream_management=stream_management, resume_timeout=resume_timeout)
