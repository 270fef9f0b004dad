"""The client library and `kabar` with XEP-0198 stream management against Prosody (mod_smacks)
and ejabberd (mod_stream_mgmt), through a TCP relay inside the test whose connections are cut:
reset (RST on both sides, no FIN, no stream close) or silenced (kept open, every byte dropped, so
only the client's unanswered ack request can tell).

- `kabar listen --json` as bob while alice (a raw client) sends 200 messages and the relay is
  cut several times: every message printed exactly once, in order; listen stays up and says
  "reconnected" (a JSON event), once per resumption, and nothing else.
- `kabar chat` (in tmux) as alice sending lines to bob (a raw client, direct) while her
  connection is cut: bob receives every line exactly once, in order.
- The resumption window running out while bob cannot reconnect: kabar binds a new session (and
  says so), and what was sent to bob meanwhile arrives once each, from the server's storage.

Run: /usr/bin/python3 test_client_sm.py --kabard PATH --kabarctl PATH
"""
import os
import re
import selectors
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "peers"))
import client_matrix  # noqa: E402
import kabartest  # noqa: E402
import peers  # noqa: E402
import xmpp_raw  # noqa: E402
from test_client_chat import Tmux  # noqa: E402

COUNT = 200


class Relay:
    """Forwards every connection made to `port` to the server, in one thread. cut() resets every
    connection now open (SO_LINGER 0: an RST each way, no FIN); silence() keeps them open but
    forwards nothing more in either direction. New connections are forwarded normally."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.peer = {}        # socket -> the other socket of its pair
        self.silenced = []    # sockets kept open, never read again
        self.accepted = 0
        self.refusing = False  # new connections are reset at once
        self.commands = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping:
            with self.lock:
                cmds, self.commands = self.commands, []
            for c in cmds:
                c()
            for key, _ in self.sel.select(timeout=0.02):
                s = key.fileobj
                if s is self.lsock:
                    c, _ = self.lsock.accept()
                    if self.refusing:
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        c.close()
                        continue
                    try:
                        up = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                    except OSError:
                        c.close()
                        continue
                    self.accepted += 1
                    for a, b in ((c, up), (up, c)):
                        a.setblocking(True)
                        self.peer[a] = b
                        self.sel.register(a, selectors.EVENT_READ, None)
                    continue
                other = self.peer.get(s)
                if other is None:
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._close_pair(s, rst=False)
                    continue
                try:
                    other.sendall(data)
                except OSError:
                    self._close_pair(s, rst=False)

    def _close_pair(self, s, rst):
        other = self.peer.pop(s, None)
        for x in (s, other):
            if x is None:
                continue
            self.peer.pop(x, None)
            try:
                self.sel.unregister(x)
            except (KeyError, ValueError):
                pass
            if rst:
                x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            x.close()

    def _do(self, fn):
        done = threading.Event()
        with self.lock:
            self.commands.append(lambda: (fn(), done.set()))
        done.wait(5)

    def cut(self):
        def fn():
            for s in list(self.peer):
                if s in self.peer:
                    self._close_pair(s, rst=True)
        self._do(fn)

    def silence(self):
        def fn():
            for s in list(self.peer):
                self.sel.unregister(s)
                self.silenced.append(s)
            self.peer.clear()
        self._do(fn)

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        for s in list(self.peer) + self.silenced:
            s.close()
        self.lsock.close()


def listen_through_relay(res, name, k, srv, relay, resource):
    """`kabar listen --json` as bob through the relay, and alice (raw, direct, available) logged
    in as `resource`: (listen, alice), or (listen, None) when listen did not come up."""
    e = k.env("bob")
    e["KABAR_SERVER"] = f"127.0.0.1:{relay.port}"
    lb = kabartest.JsonLines([k.binary, "listen", "--json", "--keepalive", "2"], e)
    ready = lb.wait(lambda ev: ev["type"] == "ready", timeout=20)
    res.check(ready is not None, f"{name}: bob listens through the relay")
    if ready is None:
        return lb, None
    try:
        alice = xmpp_raw.login(srv.port, "alice", client_matrix.PASSWORDS["alice"],
                               domain=srv.domain, mech="PLAIN", resource=resource)
        alice.presence()
    except BaseException:
        lb.stop()
        raise
    return lb, alice


def listen_case(res, name, k, srv, relay):
    """bob listens through the relay; alice (raw, direct) sends COUNT messages; cuts meanwhile."""
    d = srv.domain
    lb, alice = listen_through_relay(res, name, k, srv, relay, "raw")
    try:
        if alice is None:
            return
        want = [f"m{i:04d}" for i in range(COUNT)]
        # Sent in runs; between runs the relay's connection is reset or silenced, and the next
        # run goes out while kabar is still on the dead connection or reconnecting. The cut
        # after that waits for the reconnection (an event: a new connection at the relay).
        plan = [(40, "cut"), (50, "silence"), (50, "cut"), (30, "cut"), (30, None)]
        sent = 0
        cuts = 0
        for run_length, action in plan:
            for body in want[sent:sent + run_length]:
                alice.message(f"bob@{d}", body)
            sent += run_length
            alice.pump()
            if action:
                if cuts:
                    # The previous cut is behind us: the session was resumed.
                    ev = lb.wait(lambda ev: ev["type"] == "reconnected"
                                 and len([x for x in lb.events
                                          if x["type"] == "reconnected"]) >= cuts, timeout=20)
                    res.check(ev is not None, f"{name}: resumed after cut {cuts}")
                getattr(relay, action)()
                cuts += 1
        def printed():
            return [ev["body"] for ev in lb.events
                    if ev["type"] == "message" and ev.get("from", "").startswith(f"alice@{d}")]

        lb.wait(lambda ev: len(printed()) >= COUNT, timeout=60)
        # Anything printed twice would come after the last one: give it a moment to show.
        lb.wait(lambda ev: False, timeout=1.5)
        got = printed()
        dup = len(got) - len(set(got))
        missing = [b for b in want if b not in set(got)]
        print(f"{name}: listen printed {len(got)} of {COUNT} messages, {dup} twice, "
              f"{len(missing)} missing, {relay.accepted} connections through the relay",
              flush=True)
        res.check(got == want,
                  f"{name}: every message printed exactly once, in order "
                  f"(missing {missing[:5]}, {dup} duplicates)")
        res.check(lb.proc.poll() is None, f"{name}: kabar listen stayed up")
        res.check(lb.wait(lambda ev: len([x for x in lb.events
                                          if x["type"] == "reconnected"]) >= cuts) is not None,
                  f"{name}: resumed after each of the {cuts} cuts")
        res.check(not [x for x in lb.events if x["type"] == "new-session"],
                  f"{name}: never a new session (every resumption succeeded)")
        alice.close()
    finally:
        lb.stop()
    res.check(not lb.stderr.strip(), f"{name}: nothing on stderr ({lb.stderr.strip()})")


def chat_case(res, name, k, srv, relay, work):
    """alice chats through the relay while it is cut; bob (raw, direct) counts the lines."""
    d = srv.domain
    tmux = Tmux(work)
    bob = None
    try:
        bob = xmpp_raw.login(srv.port, "bob", client_matrix.PASSWORDS["bob"], domain=d,
                             mech="PLAIN", resource="raw")
        bob.presence()
        e = k.env("alice")
        e = {kk: v for kk, v in e.items() if kk.startswith("KABAR_") or kk in ("HOME", "PATH")}
        e["KABAR_SERVER"] = f"127.0.0.1:{relay.port}"
        e["LANG"] = "C.UTF-8"
        tmux.start("alice", f"{k.binary} chat --keepalive 2", e)
        ok, text = tmux.wait("alice", f"online as alice@{d}", timeout=20)
        res.check(ok, f"{name}: alice's chat is online through the relay")
        tmux.keys("alice", f"/to bob@{d}")
        want = []
        for i in range(30):
            if i == 5:
                relay.cut()
            if i == 15:
                relay.silence()
            if i == 25:
                relay.cut()
            line = f"line {i:02d}"
            want.append(line)
            tmux.keys("alice", line)
            time.sleep(0.1)
        def body(el):
            return el.findtext("{jabber:client}body") if el.tag == "{jabber:client}message" \
                else None

        got = []
        deadline = time.time() + 30
        while time.time() < deadline and len(got) < len(want):
            try:
                got.append(body(bob.wait_for(lambda el: body(el) is not None, timeout=1)))
            except xmpp_raw.Timeout:
                continue
        # Anything sent twice would come after the last one.
        got += [b for b in map(body, bob.drain(1.5)) if b is not None]
        print(f"{name}: bob received {len(got)} of {len(want)} chat lines, "
              f"{len(got) - len(set(got))} twice", flush=True)
        res.check(got == want, f"{name}: bob receives every chat line exactly once, in order "
                               f"({[g for g in got if got.count(g) > 1][:3]} twice, "
                               f"{[w for w in want if w not in got][:3]} missing)")
        res.check(tmux.alive("alice"), f"{name}: alice's chat stayed up")
        tmux.keys("alice", "/quit")
    finally:
        tmux.kill()
        if bob is not None:
            bob.abort()


def expired_case(res, name, k, srv, relay):
    """bob's connection is cut and every reconnection refused until the server has given up the
    session (its resumption window is short here): kabar binds a new session, says so, announces
    its presence again, and the messages sent to it meanwhile arrive once each (the server kept
    them for an absent client)."""
    d = srv.domain
    lb, alice = listen_through_relay(res, name, k, srv, relay, "raw2")
    try:
        if alice is None:
            return
        relay.refusing = True
        relay.cut()
        want = [f"late{i:02d}" for i in range(20)]
        for body in want:
            alice.message(f"bob@{d}", body)
        alice.pump(0.2)
        # The server's resumption window is a clock on its side: let it run out (and then some).
        time.sleep(srv.resume_timeout + 3)
        relay.refusing = False
        ev = lb.wait(lambda ev: ev["type"] in ("new-session", "reconnected"), timeout=30)
        res.check(ev is not None and ev["type"] == "new-session",
                  f"{name}: after the window, a new session, and kabar says so ({ev})")

        def printed():
            return [x["body"] for x in lb.events
                    if x["type"] == "message" and x.get("body", "").startswith("late")]

        lb.wait(lambda ev: len(printed()) >= len(want), timeout=20)
        lb.wait(lambda ev: False, timeout=1.5)
        got = printed()
        print(f"{name}: after a new session listen printed {len(got)} of {len(want)} messages "
              f"sent while it was away, {len(got) - len(set(got))} twice", flush=True)
        res.check(got == want, f"{name}: each message sent while away printed once, in order "
                               f"({got[:3]}...)")
        res.check(lb.proc.poll() is None, f"{name}: kabar listen stayed up")
        alice.close()
    finally:
        lb.stop()


def run(res, kind, binary, work):
    # The default resumption window for the cuts; a 2 s one (its own server) for the expiry.
    for resume_timeout, cases in ((None, ("listen", "chat")), (2, ("expired",))):
        with peers.start(kind, stream_management=True, resume_timeout=resume_timeout) as srv:
            k = client_matrix.Kabar(binary, srv.port, srv.domain, work)
            for user in ("alice", "bob"):
                r = k.run("register", f"{user}@{srv.domain}", user=user)
                res.check(r.returncode == 0, f"{kind}: register {user} ({r.stderr.strip()})")
            relay = Relay(srv.port)
            try:
                if "listen" in cases:
                    listen_case(res, kind, k, srv, relay)
                if "chat" in cases:
                    chat_case(res, kind, k, srv, relay, work)
                if "expired" in cases:
                    expired_case(res, kind, k, srv, relay)
            finally:
                relay.stop()


def main():
    args = kabartest.parse_args()
    res = kabartest.Results("test_client_sm")
    binary = client_matrix.kabar_binary(args)
    start = time.time()
    for kind, exe in (("prosody", "prosody"), ("ejabberd", "erl")):
        work = tempfile.mkdtemp(prefix=f"kabar-sm-{kind}-")
        try:
            if shutil.which(exe) is None:
                print(f"SKIP {kind}: not installed", flush=True)
                continue
            run(res, kind, binary, work)
        except Exception as e:  # a harness failure is a failed check, not a traceback
            res.check(False, f"{kind}: harness: {e!r}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"({time.time() - start:.1f} s)")
    res.finish()


if __name__ == "__main__":
    main()
