#!/usr/bin/python3
"""File-transfer benchmark (not a test): one transfer of SIZE MiB (default 1024) of random bytes
between two `kabar` clients on loopback, timed, with the server's CPU time read from /proc:
  1. kabard, direct (SOCKS5 to the sender's own listener; the server only carries the signalling);
  2. kabard, through its XEP-0065 proxy (`sendfile --no-direct`);
  3. Prosody 0.12 (Debian), through its mod_proxy65, the same clients and file.
The wall time is the sender's whole `kabar sendfile`: it includes hashing the file (SHA-256) before
the offer, and the receiver hashes as it writes. Writes bench/results/DATE-filetransfer.md.

Run: /usr/bin/python3 bench/filetransfer.py [--size MiB] [--build build]
"""
import argparse
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import kabartest  # noqa: E402

MIB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
PROSODY_CFG = """run_as_root = true
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ warn = "{dir}/prosody.log" }}
network_backend = "epoll"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
proxy65_ports = {{ {proxy_port} }}
proxy65_interfaces = {{ "127.0.0.1" }}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "register", "ping", "posix" }}
modules_disabled = {{ "s2s", "offline" }}
authentication = "internal_hashed"
storage = "internal"
allow_registration = true
registration_allowlist = {{ "127.0.0.1" }}
ssl = {{ certificate = "{dir}/cert.pem", key = "{dir}/key.pem" }}
VirtualHost "localhost"
Component "proxy.localhost" "proxy65"
    proxy65_address = "127.0.0.1"
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class Kabar:
    def __init__(self, binary, work, port):
        self.binary, self.work, self.port = binary, work, port

    def env(self, user):
        e = dict(os.environ)
        e["HOME"] = os.path.join(self.work, "home-" + user)
        os.makedirs(e["HOME"], exist_ok=True)
        e.update(KABAR_JID=f"{user}@localhost", KABAR_PASSWORD=user + "-pw",
                 KABAR_SERVER=f"127.0.0.1:{self.port}", KABAR_INSECURE="1")
        return e

    def run(self, user, *argv):
        return subprocess.run([self.binary, *argv], env=self.env(user), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=1800)

    def transfer(self, src, dest, server_pid, flags):
        """bob listens, alice sends; returns (seconds, server CPU seconds, transport)."""
        li = subprocess.Popen([self.binary, "listen", "--json", "--accept-files", dest],
                              env=self.env("bob"), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL)
        events = []
        ready = threading.Event()
        done = threading.Event()

        def read():
            for line in li.stdout:
                ev = json.loads(line)
                events.append(ev)
                if ev.get("type") == "ready":
                    ready.set()
                if ev.get("type") in ("file", "file-error"):
                    done.set()
        threading.Thread(target=read, daemon=True).start()
        try:
            if not ready.wait(30):
                raise RuntimeError("the receiver did not log in")
            jid = [e for e in events if e.get("type") == "ready"][0]["jid"]
            cpu0 = cpu_seconds(server_pid)
            t0 = time.time()
            r = self.run("alice", "sendfile", *flags, jid, src)
            secs = time.time() - t0
            cpu = cpu_seconds(server_pid) - cpu0
            done.wait(60)
            if r.returncode != 0:
                raise RuntimeError(f"sendfile failed: {r.stderr.strip()}")
            ev = [e for e in events if e.get("type") in ("file", "file-error")][-1]
            if ev.get("type") != "file" or ev.get("hash_checked") != "yes":
                raise RuntimeError(f"the receiver reports {ev}")
            os.unlink(ev["path"])
            return secs, cpu, ev["transport"]
        finally:
            li.terminate()
            li.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="MiB")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    bindir = os.path.join(a.build, "bin")
    kabar_bin = os.path.join(bindir, "kabar")
    work = tempfile.mkdtemp(prefix="kabar-ftbench-")
    rows = []
    try:
        src = os.path.join(work, "payload.bin")
        with open(src, "wb") as f:
            for _ in range(a.size // 4):
                f.write(os.urandom(4 * MIB))
        size = os.path.getsize(src)
        dest = os.path.join(work, "in")
        os.makedirs(dest)

        args = argparse.Namespace(kabard=os.path.join(bindir, "kabard"),
                                  kabarctl=os.path.join(bindir, "kabarctl"), keep=False)
        proxy_port = kabartest.free_port()
        with kabartest.Kabard(args, extra_flags=["--proxy65", f"127.0.0.1:{proxy_port}"]) as k:
            for u in ("alice", "bob"):
                k.add_user(u, u + "-pw")
            kb = Kabar(kabar_bin, work, k.port)
            for name, flags in (("kabard, direct", []), ("kabard proxy65", ["--no-direct"])):
                secs, cpu, transport = kb.transfer(src, dest, k.proc.pid, flags)
                rows.append((name, transport, secs, cpu))
                print(f"{name}: {transport} {size / MIB / secs:.0f} MiB/s, server CPU {cpu:.2f} s",
                      flush=True)

        pdir = os.path.join(work, "prosody")
        os.makedirs(os.path.join(pdir, "data"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", os.path.join(pdir, "key.pem"),
                        "-out", os.path.join(pdir, "cert.pem")], check=True, capture_output=True)
        pport, pproxy = kabartest.free_port(), kabartest.free_port()
        with open(os.path.join(pdir, "prosody.cfg.lua"), "w") as f:
            f.write(PROSODY_CFG.format(dir=pdir, port=pport, proxy_port=pproxy))
        prosody = subprocess.Popen(["prosody", "-F", "--config",
                                    os.path.join(pdir, "prosody.cfg.lua")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(pport)
            kb = Kabar(kabar_bin, work, pport)
            for u in ("alice", "bob"):
                r = kb.run(u, "register", f"{u}@localhost")
                if r.returncode != 0:
                    raise RuntimeError(f"register on Prosody: {r.stderr}")
            secs, cpu, transport = kb.transfer(src, dest, prosody.pid, ["--no-direct"])
            rows.append(("Prosody mod_proxy65", transport, secs, cpu))
            print(f"Prosody: {transport} {size / MIB / secs:.0f} MiB/s, server CPU {cpu:.2f} s",
                  flush=True)
        finally:
            prosody.terminate()
            prosody.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    gib = size / (1024 * MIB)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    prosody_v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "prosody"],
                               capture_output=True, text=True).stdout.strip()
    lines = [f"# File transfer, {datetime.date.today()}",
             "",
             f"One transfer of {size // MIB} MiB of random bytes between two `kabar` clients on "
             f"loopback (`bench/filetransfer.py`), commit `{commit}`, Prosody {prosody_v}, "
             f"{os.cpu_count()} cores shared with other work. Time: the sender's whole "
             "`kabar sendfile` (it hashes the file before offering it; the receiver hashes as it "
             "writes). Server CPU: user+system time of the server process during the transfer. "
             "On the direct path the server only carries the signalling. The wall time is bound "
             "by the two clients (each copies and hashes 64 KiB at a time on one thread) as long "
             "as the relay keeps up; the relays differ in the CPU they spend.",
             "",
             "| path | transport | seconds | MiB/s | server CPU s | server CPU s per GiB | "
             "GiB relayed per server CPU s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, transport, secs, cpu in rows:
        per = cpu / gib
        relayed = f"{gib / cpu:.2f}" if transport == "s5b-proxy" and cpu > 0 else "-"
        lines.append(f"| {name} | {transport} | {secs:.1f} | {size / MIB / secs:.0f} | "
                     f"{cpu:.2f} | {per:.2f} | {relayed} |")
    k_row = [r for r in rows if r[0] == "kabard proxy65"]
    p_row = [r for r in rows if r[0].startswith("Prosody")]
    if k_row and p_row and k_row[0][3] > 0:
        ratio = p_row[0][3] / k_row[0][3]
        lines += ["", f"kabard's proxy used {ratio:.1f}x less CPU per GiB than Prosody's "
                      f"mod_proxy65 (target: at least 2x)."]
    out = os.path.join(ROOT, "bench", "results", f"{datetime.date.today()}-filetransfer.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("written to", out)


if __name__ == "__main__":
    main()
