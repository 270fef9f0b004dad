#!/usr/bin/python3
"""kabard's SOCKS5 bytestreams proxy (XEP-0065 §6), driven by hand: discovery, a relayed stream
in both directions with the bytes checked, and the bad cases (a garbage greeting, a hash nobody
asked for, activation by a third party or with one side missing, too many streams, a reader that
stops reading), while the proxy keeps serving the other streams."""
import hashlib
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import NS_CLIENT, error_condition, login, q, tostr  # noqa: E402

R = kabartest.Results("proxy65")
NS_BS = "http://jabber.org/protocol/bytestreams"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
PROXY = "proxy.localhost"
PW = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


section = R.section


def dst_addr(sid, requester, target):
    return hashlib.sha1((sid + requester + target).encode()).hexdigest()


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(out), n))
        out += chunk
    return out


def socks5(port, addr, timeout=5):
    """Connects and negotiates CONNECT to `addr`; returns the socket or raises."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"\x05\x01\x00")
    if recv_exact(s, 2) != b"\x05\x00":
        raise ConnectionError("method refused")
    a = addr.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(a)]) + a + b"\x00\x00")
    head = recv_exact(s, 5)
    if head[:2] != b"\x05\x00":
        raise ConnectionError("CONNECT refused (%r)" % head)
    echoed = recv_exact(s, head[4] + 2)
    if echoed[:-2] != a:
        raise ConnectionError("reply does not echo DST.ADDR")
    return s


def closed_soon(s, timeout=5):
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionError, OSError):
        return True
    except socket.timeout:
        return False


def activate(c, sid, target):
    return c.iq("set", "<query xmlns='%s' sid='%s'><activate>%s</activate></query>"
                % (NS_BS, sid, target), to=PROXY)


def relayed_pair(k, a, b, sid):
    """bob (target) then alice (requester) connect; alice activates. Returns both sockets."""
    h = dst_addr(sid, a.jid, b.jid)
    target = socks5(k.proxy_port, h)
    requester = socks5(k.proxy_port, h)
    r = activate(a, sid, b.jid)
    return target, requester, r


@section
def discovery(k, a):
    r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_ITEMS, to="localhost")
    items = [i.get("jid") for i in r.iter(q(NS_DISCO_ITEMS, "item"))]
    R.check(PROXY in items, "the server's disco items list %s (%s)" % (PROXY, items))
    r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to=PROXY)
    ident = r.find("%s/%s" % (q(NS_DISCO_INFO, "query"), q(NS_DISCO_INFO, "identity")))
    feats = [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))]
    R.check(ident is not None and ident.get("category") == "proxy"
            and ident.get("type") == "bytestreams" and NS_BS in feats,
            "the proxy says it is a bytestreams proxy (%s)" % tostr(r))
    r = a.iq("get", "<query xmlns='%s'/>" % NS_BS, to=PROXY)
    sh = r.find("%s/%s" % (q(NS_BS, "query"), q(NS_BS, "streamhost")))
    R.check(sh is not None and sh.get("jid") == PROXY and sh.get("host") == "127.0.0.1"
            and sh.get("port") == str(k.proxy_port),
            "streamhost: its bound address and port (%s)" % tostr(r))
    # A component takes IQs only: a message to it is answered with service-unavailable.
    a.message(PROXY, "hello proxy")
    e = a.wait_for(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error",
                   what="message error")
    R.check(error_condition(e) == "service-unavailable",
            "a message to the proxy -> service-unavailable (%s)" % error_condition(e))


@section
def relay_both_ways(k, a, b):
    t, rq, r = relayed_pair(k, a, b, "sid-ok")
    R.check(r.get("type") == "result", "activation by the requester succeeds (%s)" % tostr(r))
    payload = os.urandom(4 * 1024 * 1024)
    got = bytearray()

    def reader():
        t.settimeout(20)
        while len(got) < len(payload):
            chunk = t.recv(1 << 16)
            if not chunk:
                break
            got.extend(chunk)
    th = threading.Thread(target=reader)
    t0 = time.monotonic()
    th.start()
    rq.sendall(payload)
    th.join(30)
    took = time.monotonic() - t0
    R.check(hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(),
            "4 MiB requester -> target arrive intact (%d bytes)" % len(got))
    # bytes_per_second = 2 MiB in this kabard's config: 4 MiB cannot take much under 2 s.
    R.check(took >= 1.5, "the per-stream cap of 2 MiB/s holds (4 MiB took %.2f s)" % took)
    t.sendall(b"and back")
    R.check(recv_exact(rq, 8) == b"and back", "target -> requester too")
    # The requester closes its side; the target sees the end of the stream and closes too.
    rq.shutdown(socket.SHUT_WR)
    R.check(closed_soon(t), "the requester's close reaches the target")
    t.close()
    rq.close()


@section
def refusals(k, a, b, c):
    # A greeting that is not SOCKS5 is dropped.
    g = socket.create_connection(("127.0.0.1", k.proxy_port), timeout=5)
    g.sendall(b"GET / HTTP/1.0\r\n\r\n")
    R.check(closed_soon(g), "a garbage greeting: connection closed")
    g.close()
    # A DST.ADDR that is not a SHA-1 in hex is refused.
    try:
        socks5(k.proxy_port, "not-a-hash")
        R.check(False, "a DST.ADDR that is not a hash is refused")
    except ConnectionError:
        R.check(True, "a DST.ADDR that is not a hash is refused")
    # Activation of a hash nobody connected with.
    r = activate(a, "sid-nobody", b.jid)
    R.check(error_condition(r) == "item-not-found", "activating a stream nobody opened -> "
            "item-not-found (%s)" % error_condition(r))
    # Only the target connected.
    h = dst_addr("sid-half", a.jid, b.jid)
    half = socks5(k.proxy_port, h)
    r = activate(a, "sid-half", b.jid)
    R.check(error_condition(r) == "not-allowed", "only one side connected -> not-allowed (%s)"
            % error_condition(r))
    # Both connected, but carol (not the requester) tries to activate: her JID is in her hash.
    other = socks5(k.proxy_port, h)
    r = activate(c, "sid-half", b.jid)
    R.check(error_condition(r) == "item-not-found",
            "activation by a third party -> item-not-found (%s)" % error_condition(r))
    r = activate(a, "sid-half", b.jid)
    R.check(r.get("type") == "result", "the requester can still activate it")
    half.close()
    other.close()


@section
def limits(k, a, b):
    # streams_per_account = 2 in this kabard's config; the streams of earlier sections are gone.
    time.sleep(0.5)
    pairs = []
    for i in range(2):
        t, rq, r = relayed_pair(k, a, b, "sid-lim-%d" % i)
        pairs.append((t, rq))
        R.check(r.get("type") == "result", "stream %d of 2 activated" % (i + 1))
    t3, rq3, r = relayed_pair(k, a, b, "sid-lim-3")
    R.check(error_condition(r) == "resource-constraint",
            "a third concurrent stream -> resource-constraint (%s)" % error_condition(r))
    for s in (t3, rq3):
        s.close()
    for t, rq in pairs:
        t.close()
        rq.close()
    time.sleep(0.5)
    t, rq, r = relayed_pair(k, a, b, "sid-lim-4")
    R.check(r.get("type") == "result", "once they end, a new stream is allowed again")
    t.close()
    rq.close()


@section
def slow_reader(k, a, b):
    # The target never reads: the requester's writes stall, the stream goes idle and is closed
    # after idle_timeout (3 s here); meanwhile another stream is served.
    t, rq, r = relayed_pair(k, a, b, "sid-slow")
    R.check(r.get("type") == "result", "slow-reader stream activated")
    rq.settimeout(0.5)
    sent = 0
    try:
        while sent < 64 * 1024 * 1024:
            sent += rq.send(b"x" * 65536)
    except (socket.timeout, BlockingIOError):
        pass
    t2, rq2, r2 = relayed_pair(k, a, b, "sid-beside")
    rq2.sendall(b"still served")
    R.check(r2.get("type") == "result" and recv_exact(t2, 12) == b"still served",
            "another stream is relayed while one reader is stuck")
    t2.close()
    rq2.close()
    R.check(closed_soon(rq, timeout=10), "the stuck stream is closed after its idle timeout "
            "(%d bytes were taken before it stalled)" % sent)
    t.close()
    rq.close()


def main():
    args = kabartest.parse_args()
    proxy_port = kabartest.free_port()
    k = kabartest.Kabard(args, config="[proxy65]\nstreams_per_account = 2\nidle_timeout = 3\n"
                         "bytes_per_second = 2097152\n",
                         extra_flags=("--proxy65", "127.0.0.1:%d" % proxy_port))
    k.proxy_port = proxy_port
    with k:
        for user, pw in PW.items():
            k.add_user(user, pw)
        a = login(k.port, "alice", PW["alice"], resource="send")
        b = login(k.port, "bob", PW["bob"], resource="recv")
        c = login(k.port, "carol", PW["carol"], resource="evil")
        discovery(k, a)
        relay_both_ways(k, a, b)
        refusals(k, a, b, c)
        limits(k, a, b)
        slow_reader(k, a, b)
        R.check(k.alive(), "kabard alive after all sections")
        # A stream being relayed does not keep kabard from stopping.
        t, rq, r = relayed_pair(k, a, b, "sid-at-stop")
        R.check(r.get("type") == "result", "a stream is active at shutdown")
        k.proc.send_signal(15)
        try:
            rc = k.proc.wait(timeout=15)
        except Exception:  # noqa: BLE001
            rc = None
        R.check(rc == 0, "kabard stops on SIGTERM with a stream in flight (rc=%s)" % rc)
        R.check(closed_soon(t), "the relayed connection is closed at shutdown")
        for x in (a, b, c, t, rq):
            x.close()
    R.finish()


if __name__ == "__main__":
    main()
