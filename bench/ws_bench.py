#!/usr/bin/python3
"""XMPP over WebSocket (RFC 7395) beside plain TCP c2s, on kabard alone (not part of make test).

  memory      N idle authenticated sessions (accounts x resources), once over plain TCP and once
              over ws://, each in a fresh kabard: the server's RSS per session after its
              connections have hibernated (5 s idle), less the RSS before they connected.
  throughput  P sender/receiver pairs exchanging M messages each, over TCP and then over
              WebSocket, in the same kabard: messages delivered per second of kabard CPU time
              (utime + stime from /proc), and the wall rate. The driver (this script, asyncio)
              is the bottleneck, so both modes run at about the rate it can drive; the figure
              compared is kabard's CPU per message, not the maximum rate.

kabard runs pinned to CPU 0 with one shard, the driver to CPU 1 (taskset), authentication in
the clear (--allow-plaintext; loopback WebSocket counts as secure anyway): no TLS in either mode.

Usage: bench/ws_bench.py [--build build] [--sessions 2000] [--pairs 20] [--messages 2000]
                         [--out bench/results/FILE.md]
"""
import argparse
import asyncio
import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOMAIN = "localhost"
PASSWORD = "benchpw"
HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / hz


class Server:
    def __init__(self, build, users):
        self.dir = tempfile.mkdtemp(prefix="kabar-wsbench-")
        self.port = free_port()
        self.http = free_port()
        data = os.path.join(self.dir, "data")
        ctl = os.path.join(build, "bin", "kabarctl")
        for u in users:
            subprocess.run([ctl, "--data-dir", data, "user", "add", u, PASSWORD], check=True,
                           capture_output=True, stdin=subprocess.DEVNULL)
        self.log = open(os.path.join(self.dir, "kabard.log"), "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", os.path.join(build, "bin", "kabard"), "--domain", DOMAIN,
             "--data-dir", data, "--c2s", f"127.0.0.1:{self.port}", "--http",
             f"127.0.0.1:{self.http}", "--allow-plaintext", "--threads", "1",
             "--log-level", "warn"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.http), timeout=0.5).close()
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("kabard did not start")
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Conn:
    """One client connection, TCP or WebSocket; `received` counts <message elements."""

    def __init__(self, ws):
        self.ws = ws
        self.buf = b""
        self.text = ""  # TCP: unscanned stream text; WS: concatenated payloads since last wait
        self.received = 0
        self.waiter = None

    async def connect(self, server, user, resource):
        port = server.http if self.ws else server.port
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        if self.ws:
            key = base64.b64encode(os.urandom(16)).decode()
            self.writer.write((f"GET /xmpp-websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                               f"Sec-WebSocket-Protocol: xmpp\r\n\r\n").encode())
            head = await self.reader.readuntil(b"\r\n\r\n")
            if b" 101 " not in head.split(b"\r\n")[0]:
                raise RuntimeError(head.decode())
        self.task = asyncio.ensure_future(self.read_loop())
        await self.send_open()
        await self.until("</stream:features>", "</stream:features>")
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                        f"{token}</auth>")
        await self.until("<success")
        await self.send_open()
        await self.until("</stream:features>")
        await self.send(f"<iq type='set' id='b' xmlns='jabber:client'><bind "
                        f"xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}"
                        f"</resource></bind></iq>")
        await self.until("</iq>")

    async def send_open(self):
        await self.send(OPEN if self.ws else HEADER)

    async def send(self, text):
        data = text.encode()
        if self.ws:
            n = len(data)
            if n < 126:
                head = bytes([0x81, 0x80 | n])
            elif n < 65536:
                head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
            else:
                head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
            data = head + b"\0\0\0\0" + data  # a zero mask key: the payload goes as it is
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > 1 << 20:
            await self.writer.drain()

    async def until(self, marker, *_):
        while marker not in self.text:
            fut = asyncio.get_event_loop().create_future()
            self.waiter = fut
            await asyncio.wait_for(fut, 30)
        self.text = self.text[self.text.index(marker) + len(marker):]

    async def read_loop(self):
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return
                if self.ws:
                    self.buf += data
                    out = []
                    while len(self.buf) >= 2:
                        n = self.buf[1] & 0x7F
                        at = 2
                        if n == 126:
                            if len(self.buf) < 4:
                                break
                            n = int.from_bytes(self.buf[2:4], "big")
                            at = 4
                        elif n == 127:
                            if len(self.buf) < 10:
                                break
                            n = int.from_bytes(self.buf[2:10], "big")
                            at = 10
                        if len(self.buf) < at + n:
                            break
                        out.append(self.buf[at:at + n])
                        self.buf = self.buf[at + n:]
                    chunk = b"".join(out).decode("utf-8", "replace")
                else:
                    chunk = data.decode("utf-8", "replace")
                self.received += chunk.count("<message")
                # Only what a login waits for is kept (markers), not the message flood.
                if self.waiter is not None:
                    self.text += chunk
                    if not self.waiter.done():
                        self.waiter.set_result(True)
                    self.waiter = None
                elif len(self.text) < 65536:
                    self.text += chunk
        except (ConnectionError, asyncio.CancelledError):
            return


async def open_many(server, ws, users, resources):
    conns = []
    for r in range(resources):
        # 20 logins at a time: kabard admits 32 unauthenticated connections per address.
        for i in range(0, len(users), 20):
            batch = []
            for u in users[i:i + 20]:
                c = Conn(ws)
                batch.append(c.connect(server, u, f"r{r}"))
                conns.append(c)
            await asyncio.gather(*batch)
    return conns


async def memory(build, sessions, ws):
    users = [f"u{i}" for i in range(100)]
    resources = max(1, sessions // len(users))
    s = Server(build, users)
    try:
        warm = await open_many(s, ws, users[:10], 1)  # first allocations (pools, caches)
        await asyncio.sleep(3)
        before = rss_kb(s.proc.pid)
        conns = await open_many(s, ws, users, resources)
        await asyncio.sleep(5)  # hibernated (2 s idle, then the next sweep)
        after = rss_kb(s.proc.pid)
        n = len(conns)
        for c in conns + warm:
            c.writer.close()
        return {"sessions": n, "rss_before_kb": before, "rss_after_kb": after,
                "bytes_per_session": (after - before) * 1024 / n}
    finally:
        s.stop()


async def throughput(server, ws, pairs, messages, tag):
    senders, receivers = [], []
    for i in range(pairs):
        a, b = Conn(ws), Conn(ws)
        await a.connect(server, f"s{i}", tag)
        await b.connect(server, f"r{i}", tag)
        senders.append(a)
        receivers.append(b)
    for b in receivers:
        await b.send("<presence/>")
    await asyncio.sleep(1)
    for b in receivers:
        b.received = 0
    cpu0 = cpu_s(server.proc.pid)
    t0 = time.time()
    burst = 50
    sent = 0
    while sent < messages:
        n = min(burst, messages - sent)
        for i, a in enumerate(senders):
            to = f"r{i}@localhost/{tag}"
            msgs = [f"<message xmlns='jabber:client' to='{to}' type='chat'><body>"
                    f"message {sent + k} of a benchmark run</body></message>" for k in range(n)]
            # One write per stanza in both modes (over WebSocket one stanza per message,
            # RFC 7395 §3.3.3), so that kabard reads them alike.
            for m in msgs:
                await a.send(m)
        sent += n
        # Keep at most a few bursts in flight.
        while sum(b.received for b in receivers) < (sent - 4 * burst) * pairs:
            await asyncio.sleep(0.001)
    deadline = time.time() + 60
    while sum(b.received for b in receivers) < messages * pairs and time.time() < deadline:
        await asyncio.sleep(0.005)
    wall = time.time() - t0
    cpu = cpu_s(server.proc.pid) - cpu0
    got = sum(b.received for b in receivers)
    for c in senders + receivers:
        c.writer.close()
    return {"delivered": got, "wall_s": wall, "cpu_s": cpu, "msg_per_s": got / wall,
            "msg_per_cpu_s": got / cpu if cpu > 0 else 0}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    os.sched_setaffinity(0, {1})
    lines = []

    def say(s):
        print(s, flush=True)
        lines.append(s)

    say(f"# XMPP over WebSocket beside TCP ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    say("")
    rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    say(f"kabard {rev}, one shard pinned to CPU 0, driver (bench/ws_bench.py) on CPU 1; "
        f"load average at start {os.getloadavg()[0]:.1f}.")
    say("")
    say("## Memory per idle authenticated session")
    say("")
    say("| transport | sessions | RSS before (KiB) | RSS after (KiB) | per session |")
    say("|---|---|---|---|---|")
    for ws in (False, True):
        m = await memory(a.build, a.sessions, ws)
        say(f"| {'WebSocket (ws://)' if ws else 'TCP (plain)'} | {m['sessions']} | "
            f"{m['rss_before_kb']} | {m['rss_after_kb']} | "
            f"{m['bytes_per_session'] / 1024:.2f} KiB |")
    say("")
    say(f"## Messages per kabard CPU-second ({a.pairs} pairs, {a.messages} messages each, "
        f"{a.rounds} rounds alternating)")
    say("")
    say("| round | transport | delivered | wall msg/s | kabard CPU s | msgs per CPU-second |")
    say("|---|---|---|---|---|---|")
    users = [f"s{i}" for i in range(a.pairs)] + [f"r{i}" for i in range(a.pairs)]
    s = Server(a.build, users)
    try:
        for rnd in range(a.rounds):
            for ws in (False, True):
                t = await throughput(s, ws, a.pairs, a.messages, f"{'ws' if ws else 'tcp'}{rnd}")
                say(f"| {rnd + 1} | {'WebSocket' if ws else 'TCP'} | {t['delivered']} | "
                    f"{t['msg_per_s']:.0f} | {t['cpu_s']:.2f} | {t['msg_per_cpu_s']:.0f} |")
                await asyncio.sleep(1)
    finally:
        s.stop()
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
