"""Shared harness for the integration tests: starts the real kabard on free loopback ports with
a fresh data directory, makes accounts with kabarctl, and stops it at the end.

Run by ctest as: /usr/bin/python3 test_x.py --kabard PATH --kabarctl PATH
"""
import argparse
import asyncio
import functools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kabard", required=True)
    ap.add_argument("--kabarctl", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    return ap.parse_args()


def http_request(method, url, body=None, headers=None, timeout=15):
    """One HTTP request on a new connection: (status, body, headers with lower-case names)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        c.request(method, u.path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, data, {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


def server_rx_queue(server_port, client_port):
    """Bytes the kernel holds unread for the server on the connection from client_port (from
    /proc/net/tcp), or None when there is no such connection."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, queues = parts[1], parts[2], parts[4]
                    if int(local.split(":")[1], 16) == server_port and \
                            int(remote.split(":")[1], 16) == client_port:
                        return int(queues.split(":")[1], 16)
        except OSError:
            pass
    return None


def offline_count(k, user):
    """How many offline messages `kabarctl user offline USER` reports for `user` (-1: none said)."""
    r = k.ctl("user", "offline", user, check=False)
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "messages" and parts[1].isdigit():
            return int(parts[1])
    return -1


def sqlite_count(k, sql):
    """The single number `sql` (a SELECT COUNT) gives on kabard's store, read beside it."""
    import sqlite3
    db = sqlite3.connect(os.path.join(k.data_dir, "kabar.db"), timeout=10)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


# One definition for both test trees (tests/peers/ has no imports of ours).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers"))
from peers import free_port  # noqa: E402,F401


class Kabard:
    """One kabard process. `config` is extra TOML text; flags carry the rest."""

    def __init__(self, args, domain="localhost", allow_registration=True, allow_plaintext=False,
                 config="", extra_flags=()):
        self.args = args
        self.domain = domain
        self.dir = tempfile.mkdtemp(prefix="kabar-it-")
        self.data_dir = os.path.join(self.dir, "data")
        self.port = free_port()
        self.tls_port = free_port()
        self.log_path = os.path.join(self.dir, "kabard.log")
        cmd = [args.kabard, "--domain", domain, "--data-dir", self.data_dir,
               "--c2s", f"127.0.0.1:{self.port}", "--c2s-tls", f"127.0.0.1:{self.tls_port}"]
        if allow_registration:
            cmd.append("--allow-registration")
        if allow_plaintext:
            cmd.append("--allow-plaintext")
        if config:
            path = os.path.join(self.dir, "kabard.toml")
            with open(path, "w") as f:
                f.write(config)
            cmd += ["--config", path]
        cmd += list(extra_flags)
        self.cmd = cmd
        self.proc = None

    def start(self):
        self.failures_at_start = Results.failures
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("kabard exited early:\n" + self.read_log())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                with socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.5):
                    pass
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("kabard did not listen in time:\n" + self.read_log())

    def read_log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ctl(self, *argv, password=None, check=True):
        env = dict(os.environ)
        if password is not None:
            env["KABAR_PASSWORD"] = password
        r = subprocess.run([self.args.kabarctl, "--data-dir", self.data_dir, *argv],
                           capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"kabarctl {argv} failed: {r.stderr}")
        return r

    def add_user(self, user, password):
        self.ctl("user", "add", user, password=password)

    def stop(self, timeout=15):
        """SIGTERM and wait: kabard must exit 0 on its own."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("kabard did not stop on SIGTERM within %ss" % timeout)
        self.log.close()
        return self.proc.returncode

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                rc = self.stop()
                if rc != 0:
                    raise RuntimeError(f"kabard exited {rc}:\n" + self.read_log()[-3000:])
        finally:
            # A check that failed while this kabard ran: its log goes with the report (CI keeps
            # nothing else of it).
            if exc[0] is not None or Results.failures > getattr(self, "failures_at_start",
                                                                Results.failures):
                sys.stderr.write("---- kabard log (tail) ----\n" + self.read_log()[-12000:] + "\n")
            self.cleanup()


async def next_matching(queue, pred, timeout=10.0):
    """The next item of the asyncio queue for which pred holds (the others are dropped), or None
    once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            return None
        if pred(item):
            return item


def shutdown_loop(loop):
    """Cancels what slixmpp left running, then closes the loop (no noise at exit)."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


def run_in_new_loop(R, what, timeout, scenarios, *args):
    """On a fresh event loop, awaits each `fn(*args)` of `scenarios` in turn, each within `timeout`
    seconds; the first exception stops them and counts as the failed check `what (...)`. Shuts the
    loop down at the end."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        for fn in scenarios:
            loop.run_until_complete(asyncio.wait_for(fn(*args), timeout))
    except Exception as e:  # noqa: BLE001
        R.check(False, f"{what} ({type(e).__name__}: {e})")
    finally:
        shutdown_loop(loop)


class Netns:
    """Three network namespaces (root, `ip netns`): srv joined by one veth pair to each of a and
    b. a and b reach 10.213.9.1 (on srv's loopback: where kabard, and coturn, listen) through srv,
    which does not forward, so they do not reach each other. `prefix` starts their names.
    With `wait_running`, up() also waits until a's and b's veth ends are RUNNING."""

    def __init__(self, prefix, wait_running=False):
        self.tag = "%s%d" % (prefix, os.getpid() % 100000)
        self.srv, self.a, self.b = self.tag + "s", self.tag + "a", self.tag + "b"
        self.wait_running = wait_running
        self.made = []

    def sh(self, *cmd):
        subprocess.run(cmd, check=True, capture_output=True)

    def up(self):
        for n in (self.srv, self.a, self.b):
            self.sh("ip", "netns", "add", n)
            self.made.append(n)
            self.sh("ip", "-n", n, "link", "set", "lo", "up")
        self.sh("ip", "-n", self.srv, "addr", "add", "10.213.9.1/32", "dev", "lo")
        self.sh("ip", "netns", "exec", self.srv, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        for i, n in ((1, self.a), (2, self.b)):
            s_end, c_end = f"{self.tag}s{i}", f"{self.tag}c{i}"
            self.sh("ip", "link", "add", s_end, "netns", self.srv, "type", "veth", "peer", "name",
                    c_end, "netns", n)
            self.sh("ip", "-n", self.srv, "addr", "add", f"10.213.{i}.1/24", "dev", s_end)
            self.sh("ip", "-n", self.srv, "link", "set", s_end, "up")
            self.sh("ip", "-n", n, "addr", "add", f"10.213.{i}.2/24", "dev", c_end)
            self.sh("ip", "-n", n, "link", "set", c_end, "up")
            self.sh("ip", "-n", n, "route", "add", "10.213.9.1/32", "via", f"10.213.{i}.1")
        if self.wait_running:
            # libnice gathers only on interfaces flagged RUNNING, which a veth is once the kernel
            # has seen its carrier (up to a second after packets already pass): wait for that.
            deadline = time.time() + 10
            for i, n in ((1, self.a), (2, self.b)):
                while time.time() < deadline:
                    r = subprocess.run(["ip", "-n", n, "-o", "link", "show", f"{self.tag}c{i}"],
                                       capture_output=True, text=True)
                    if "state UP" in r.stdout:
                        break
                    time.sleep(0.05)  # a poll interval
        return self

    def probe_a_to_b(self):
        """Tries a TCP connection from namespace a to b's address; the result exits 1 and prints
        the error when it cannot reach it (what up() is for)."""
        probe = ("import socket,sys\ntry:\n socket.create_connection(('10.213.2.2',9),1)\n"
                 "except OSError as e:\n print(e); sys.exit(1)\n")
        return subprocess.run(["ip", "netns", "exec", self.a, "/usr/bin/python3", "-c", probe],
                              capture_output=True, text=True)

    def drop_udp(self, percent):
        """Drops `percent`% of the UDP packets that a and b send, at random, as they leave each
        one's veth end: an nftables netdev egress hook with numgen in each namespace, where netem
        would be a qdisc on that device (this kernel has no sch_netem: `tc qdisc ... netem loss`
        fails). The sender is not told, as with netem (an inet output hook's drop would fail its
        sendto with EPERM). Every UDP packet counts: media, and STUN/TURN too."""
        for i, n in ((1, self.a), (2, self.b)):
            nft = ("ip", "netns", "exec", n, "nft", "add")
            self.sh(*nft, "table", "netdev", "loss")
            self.sh(*nft, "chain", "netdev", "loss", "out", "{ type filter hook egress device "
                    f"{self.tag}c{i} priority 0; }}")
            self.sh(*nft, "rule", "netdev", "loss", "out", "meta", "l4proto", "udp", "numgen",
                    "random", "mod", "100", "<", str(percent), "counter", "drop")

    def dropped(self):
        """How many UDP packets drop_udp() has dropped so far: (from a, from b)."""
        out = []
        for n in (self.a, self.b):
            r = subprocess.run(["ip", "netns", "exec", n, "nft", "list", "chain", "netdev", "loss",
                                "out"], capture_output=True, text=True)
            m = re.search(r"counter packets (\d+)", r.stdout)
            out.append(int(m.group(1)) if m else 0)
        return tuple(out)

    def down(self):
        for n in self.made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        self.made = []


class JsonLines:
    """A process (`kabar listen --json`, ...) in the background whose stdout is one JSON object per
    line: the objects go to a queue (a line that is not JSON arrives as {"type": "bad-line"}), and
    wait() finds one, keeping those it passes over for later waits."""

    def __init__(self, argv, env, on_line=None):
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self.q = queue.Queue()
        self.events = []
        self.stderr = ""
        self._on_line = on_line
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if self._on_line:
                self._on_line(line)
            try:
                self.q.put(json.loads(line))
            except ValueError:
                self.q.put({"type": "bad-line", "line": line})

    def _next(self, timeout):
        try:
            ev = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        self.events.append(ev)
        return ev

    def wait(self, pred, timeout=10):
        """The first event (seen before or arriving within `timeout`) for which pred is true."""
        for ev in self.events:
            if pred(ev):
                return ev
        deadline = time.time() + timeout
        while time.time() < deadline:
            ev = self._next(max(0.05, deadline - time.time()))
            if ev is None:
                break
            if pred(ev):
                return ev
        return None

    async def wait_async(self, pred, timeout=10):
        """wait() for asyncio code (slixmpp's loop keeps running meanwhile)."""
        for ev in self.events:
            if pred(ev):
                return ev
        deadline = time.time() + timeout
        while time.time() < deadline:
            ev = self._next(0)
            if ev is None:
                await asyncio.sleep(0.05)
            elif pred(ev):
                return ev
        return None

    def stop(self):
        """Terminates the process (killed after 5 s); returns its exit code, keeps its stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr = self.proc.stderr.read()
        return self.proc.returncode


class Results:
    """Counts checks and prints the closing line ctest and CI read."""

    failures = 0  # every instance's, so that a Kabard can tell whether a check failed meanwhile

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
            print(f"ok   {what}", flush=True)
        else:
            self.failed += 1
            Results.failures += 1
            print(f"FAIL {what}", flush=True)
        return cond

    def section(self, fn):
        """Decorator: runs one group of checks; an unexpected exception counts as one failure."""
        @functools.wraps(fn)
        def run(*a):
            print("== %s" % fn.__name__, flush=True)
            try:
                fn(*a)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                self.check(False, "%s raised %s: %s" % (fn.__name__, type(e).__name__, e))
        return run

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed or not self.passed else 0)

    def run_sections(self, k, users, sections, after=None):
        """In kabard `k`: adds `users` (name -> password), runs each section `fn(k)` until one
        leaves kabard dead, checks it is alive at the end, runs `after(k)` if given, and finishes."""
        with k:
            for user, pw in users.items():
                k.add_user(user, pw)
            for fn in sections:
                fn(k)
                if not k.alive():
                    self.check(False, "kabard died during %s" % fn.__name__)
                    break
            self.check(k.alive(), "kabard alive after all sections")
            if after:
                after(k)
        self.finish()
