"""XMPP over WebSocket (RFC 7395) on kabard's HTTP and HTTPS listeners, driven by a raw client
(ws_raw.py) that parses every message it receives on its own (each must be one element that
declares its namespaces). The handshake (subprotocol `xmpp` required and echoed, origins), a
login and chat with a TCP client and a second WebSocket client, then bad input, each refused with
the RFC's answer while the bystanders keep chatting: a missing or wrong subprotocol, a wrong
Origin, a text frame that is not XML, a stanza split over two messages, an oversized message, a
binary frame, an unmasked frame, a bad opcode; ping answered; the close handshake both ways;
XEP-0156 host-meta; stream management over WebSocket (enable, the connection dropped, resumed on
a new WebSocket); the same login over wss://; and the cap on open HTTP(S) connections per address.

Run: /usr/bin/python3 test_websocket.py --kabard PATH --kabarctl PATH
"""
import json
import os
import socket
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from kabartest import free_port, http_request  # noqa: E402
from ws_raw import (NS_CLIENT, NS_FRAMING, NS_SM, NS_STREAM, WsClient,  # noqa: E402
                    WsError, q)
import xmpp_raw  # noqa: E402

R = kabartest.Results("websocket")
NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"


def stream_error_condition(el):
    if el.tag != q(NS_STREAM, "error"):
        return None
    for child in el:
        if child.tag.startswith("{%s}" % NS_STREAMS) and not child.tag.endswith("}text"):
            return child.tag.split("}")[1]
    return None


class Bystanders:
    """A TCP client (carol) and a WebSocket client (dave) who chat across every bad input."""

    def __init__(self, k):
        self.tcp = xmpp_raw.login(k.port, "carol", "carol-pw", resource="tcp")
        self.tcp.presence()
        self.ws = WsClient(k.http_port)
        self.ws.login("dave", "dave-pw", resource="ws")
        self.ws.send("<presence xmlns='jabber:client'/>")
        self.n = 0

    def chat(self, what):
        self.n += 1
        a = f"tcp-to-ws-{self.n}"
        b = f"ws-to-tcp-{self.n}"
        self.tcp.message("dave@localhost/ws", a)
        self.ws.message("carol@localhost/tcp", b)
        got_a = got_b = False
        try:
            got_a = self.ws.expect_message(a, timeout=10) is not None
        except Exception as e:  # noqa: BLE001
            print("bystander ws:", e)
        try:
            got_b = self.tcp.expect_message(b, timeout=10) is not None
        except Exception as e:  # noqa: BLE001
            print("bystander tcp:", e)
        R.check(got_a and got_b, f"bystanders still chat after {what}")


def handshake(k):
    c = WsClient(k.http_port, connect=False)
    R.check(c.upgrade() == 101, "handshake with the xmpp subprotocol: 101")
    R.check(c.headers.get("sec-websocket-protocol") == "xmpp", "the subprotocol is echoed")
    c.shutdown()
    c = WsClient(k.http_port, connect=False)
    R.check(c.upgrade(protocol=None) == 400 and b"xmpp" in c.body,
            "no subprotocol: 400, saying xmpp is required")
    c.shutdown()
    c = WsClient(k.http_port, connect=False)
    R.check(c.upgrade(protocol="chat, superchat") == 400, "another subprotocol only: 400")
    c.shutdown()
    c = WsClient(k.http_port, connect=False)
    R.check(c.upgrade(protocol="chat, xmpp") == 101 and
            c.headers.get("sec-websocket-protocol") == "xmpp",
            "xmpp among others: 101, xmpp chosen")
    c.shutdown()
    c = WsClient(k.http_port, connect=False)
    R.check(c.upgrade(origin="https://evil.example") == 403, "an origin not allowed: 403")
    c.shutdown()
    c = WsClient(k.http_port, connect=False)
    R.check(c.upgrade(origin=f"http://127.0.0.1:{k.http_port}") == 101,
            "an origin on this machine: allowed by default")
    c.shutdown()
    c = WsClient(k.http_port, connect=False)
    R.check(c.upgrade(origin="https://localhost") == 101, "the domain's own origin: allowed")
    c.shutdown()
    # Plain HTTP to the endpoint, and version 8.
    st, body, hdrs = http_request("GET", f"http://127.0.0.1:{k.http_port}/xmpp-websocket")
    R.check(st == 426, f"a plain GET of the endpoint: 426 Upgrade Required ({st})")
    c = WsClient(k.http_port, connect=False)
    req = ("GET /xmpp-websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n").encode()
    c.sock.sendall(req)
    head = c._read_until(b"\r\n\r\n").decode()
    R.check(" 426 " in head.split("\r\n")[0] and "Sec-WebSocket-Version: 13" in head,
            "version 8: 426 with Sec-WebSocket-Version: 13")
    c.shutdown()


def login_and_chat(k, by):
    c = WsClient(k.http_port)
    opened, features = c.open()
    R.check(opened.get("from") == "localhost" and opened.get("version") == "1.0" and
            opened.get("id"), "<open/> answered with <open/> (from, id, version)")
    R.check(features.find(q("urn:ietf:params:xml:ns:xmpp-tls", "starttls")) is None,
            "no STARTTLS offered over WebSocket (RFC 7395 §3.8)")
    R.check(features.find(q("urn:ietf:params:xml:ns:xmpp-sasl", "mechanisms")) is not None,
            "SASL offered over ws:// from loopback")
    c.shutdown()
    c = WsClient(k.http_port)
    jid = c.login("alice", "alice-pw", resource="web")
    R.check(jid == "alice@localhost/web", "logged in and bound over WebSocket")
    c.send("<presence xmlns='jabber:client'/>")
    by.tcp.message("alice@localhost/web", "hello from tcp")
    el = c.expect_message("hello from tcp")
    R.check(el is not None and el.get("from") == "carol@localhost/tcp",
            "a message forwarded as bytes from TCP arrives as a frame that parses alone")
    c.message("carol@localhost/tcp", "hello from ws")
    R.check(by.tcp.expect_message("hello from ws", timeout=10) is not None,
            "a message from WebSocket reaches the TCP client")
    c.message("dave@localhost/ws", "ws to ws")
    R.check(by.ws.expect_message("ws to ws") is not None, "WebSocket to WebSocket")
    c.send("<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    el = c.expect(lambda e: e.get("id") == "p1")
    R.check(el.get("type") == "result", "an IQ answered")
    # A ping frame gets a pong with the same data.
    c.send_frame(9, b"are you there")
    op, payload = c.next_frame()
    R.check(op == 0xA and payload == b"are you there", "ping answered with pong (same data)")
    # Close handshake started by the client (RFC 7395 §3.6).
    c.send(f"<close xmlns='{NS_FRAMING}'/>")
    el = c.next_element()
    R.check(el.tag == q(NS_FRAMING, "close"), "<close/> answered with <close/>")
    code = c.close_code()
    R.check(code == 1000, f"then a close frame 1000 ({code})")
    c.send_frame(8, b"\x03\xe8")
    R.check(c.wait_eof(), "then the server closes the TCP connection")
    by.chat("a login and a clean close")


def bad_input(k, by):
    def fresh():
        c = WsClient(k.http_port)
        c.login("bob", "bob-pw", resource="bad")
        return c

    def expect_not_well_formed(c, what):
        cond = None
        try:
            el = c.expect(lambda e: e.tag == q(NS_STREAM, "error"))
            cond = stream_error_condition(el)
            after = c.next_element()
            closed = after.tag == q(NS_FRAMING, "close")
        except WsError as e:
            print(what, e)
            closed = False
        R.check(cond == "not-well-formed" and closed,
                f"{what}: <not-well-formed/> stream error, then <close/> ({cond})")
        R.check(c.close_code() == 1000, f"{what}: then a close frame")
        c.shutdown()
        by.chat(what)

    c = fresh()
    c.send("hello, not XML")
    expect_not_well_formed(c, "a text frame that is not XML")

    c = fresh()
    c.send("<message xmlns='jabber:client' to='carol@localhost'><body>half")
    c.send("</body></message>")
    expect_not_well_formed(c, "a stanza split over two messages")

    c = fresh()
    c.send("<message xmlns='jabber:client' to='carol@localhost'/><message/>")
    expect_not_well_formed(c, "two elements in one message")

    def expect_close(c, want, what):
        code = c.close_code()
        R.check(code == want, f"{what}: close frame {want} ({code})")
        R.check(c.wait_eof(), f"{what}: connection closed")
        c.shutdown()
        by.chat(what)

    c = fresh()
    c.send("<message xmlns='jabber:client' to='carol@localhost'><body>" + "x" * 300_000 +
           "</body></message>")
    expect_close(c, 1009, "an oversized message")

    c = fresh()
    c.send_frame(2, b"<presence/>")
    expect_close(c, 1003, "a binary frame")

    c = fresh()
    c.send_frame(1, b"<presence xmlns='jabber:client'/>", mask=False)
    expect_close(c, 1002, "an unmasked frame")

    c = fresh()
    c.send_frame(3, b"x")
    expect_close(c, 1002, "a bad opcode")

    c = fresh()
    c.send_frame(1, b"<presence xmlns='jabber:client'/>", rsv=4)
    expect_close(c, 1002, "a reserved bit set")

    c = fresh()
    c.send_frame(1, b"<message><body>\xff\xfe</body></message>")
    expect_close(c, 1007, "text that is not UTF-8")

    c = fresh()
    c.send_frame(9, b"p" * 126)
    expect_close(c, 1002, "a control frame over 125 bytes")

    # Fragments are joined into one message.
    c = fresh()
    c.send_frame(1, "<iq xmlns='jabber:client' type='get' id='f1'>", fin=False)
    c.send_frame(9, b"between")
    c.send_frame(0, "<ping xmlns='urn:xmpp:ping'/></iq>")
    got_pong = got_result = False
    deadline = time.time() + 10
    while time.time() < deadline and not (got_pong and got_result):
        op, payload = c.next_frame()
        if op == 0xA:
            got_pong = payload == b"between"
        elif op == 1 and ET.fromstring(payload).get("id") == "f1":
            got_result = True
    R.check(got_pong and got_result, "a fragmented message with a ping between its fragments")
    # The peer's close frame without <close/>: echoed, connection closed.
    c.send_frame(8, b"\x03\xe9going")
    code = c.close_code()
    R.check(code == 1001, f"a close frame is echoed ({code})")
    R.check(c.wait_eof(), "and the connection closed")
    c.shutdown()
    by.chat("a close frame without <close/>")

    # Bytes before the handshake's answer.
    s = socket.create_connection(("127.0.0.1", k.http_port), timeout=10)
    req, _ = __import__("ws_raw").handshake_request("127.0.0.1", k.http_port)
    s.sendall(req + b"\x81\x80abcd")
    data = s.recv(4096)
    R.check(data.startswith(b"HTTP/1.1 400"), "a frame before the handshake's answer: 400")
    s.close()


def host_meta(k):
    st, body, hdrs = http_request("GET", f"http://127.0.0.1:{k.http_port}/.well-known/host-meta")
    ok = st == 200
    links = []
    if ok:
        root = ET.fromstring(body)
        links = [ln.get("href") for ln in root.findall(
            "{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")
            if ln.get("rel") == "urn:xmpp:alt-connections:websocket"]
    R.check(ok and f"ws://127.0.0.1:{k.http_port}/xmpp-websocket" in links and
            f"wss://127.0.0.1:{k.https_port}/xmpp-websocket" in links,
            f"host-meta (XRD) names the ws:// and wss:// endpoints ({links})")
    R.check(hdrs.get("access-control-allow-origin") == "*", "host-meta allows any origin (CORS)")
    st, body, hdrs = http_request("GET",
                                  f"http://127.0.0.1:{k.http_port}/.well-known/host-meta.json")
    hrefs = []
    if st == 200:
        hrefs = [ln["href"] for ln in json.loads(body)["links"]
                 if ln["rel"] == "urn:xmpp:alt-connections:websocket"]
    R.check(f"ws://127.0.0.1:{k.http_port}/xmpp-websocket" in hrefs and
            hdrs.get("content-type", "").startswith("application/json"),
            f"host-meta.json names them too ({hrefs})")


def stream_management(k, by):
    c = WsClient(k.http_port)
    c.login("erin", "erin-pw", resource="sm")
    R.check(c.features.find(q(NS_SM, "sm")) is not None, "stream management offered")
    c.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    enabled = c.expect(lambda e: e.tag == q(NS_SM, "enabled"))
    previd = enabled.get("id")
    R.check(enabled.get("resume") in ("true", "1") and previd, "enabled with resumption")
    c.send("<presence xmlns='jabber:client'/>")
    by.tcp.message("erin@localhost/sm", "sm-1")
    handled = 0  # stanzas received since <enabled/> (XEP-0198 §4: what h counts)
    while True:
        e = c.next_element()
        if e.tag.startswith("{%s}" % NS_CLIENT):
            handled += 1
        if e.tag == q(NS_CLIENT, "message") and e.findtext(q(NS_CLIENT, "body")) == "sm-1":
            break
    # The connection drops without a word (a reset).
    c.abort()
    time.sleep(0.3)
    for i in range(2, 5):
        by.tcp.message("erin@localhost/sm", f"sm-{i}")
    time.sleep(0.3)
    c2 = WsClient(k.http_port)
    c2.open()
    import base64
    token = base64.b64encode(b"\0erin\0erin-pw").decode()
    c2.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    c2.expect(lambda e: e.tag.endswith("}success"))
    c2.open()
    c2.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{handled}'/>")
    el = c2.expect(lambda e: e.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")))
    R.check(el.tag == q(NS_SM, "resumed"), "resumed on a new WebSocket")
    got = []
    deadline = time.time() + 10
    while time.time() < deadline and len(got) < 3:
        try:
            e = c2.next_element(timeout=max(0.1, deadline - time.time()))
        except TimeoutError:
            break
        if e.tag == q(NS_CLIENT, "message"):
            got.append(e.findtext(q(NS_CLIENT, "body")))
    R.check(got == ["sm-2", "sm-3", "sm-4"], f"the messages sent while away, in order ({got})")
    by.tcp.message("erin@localhost/sm", "sm-live")
    R.check(c2.expect_message("sm-live") is not None, "and the resumed stream goes on")
    c2.send(f"<close xmlns='{NS_FRAMING}'/>")
    c2.shutdown()
    by.chat("a resumption")


def over_tls(k, by):
    c = WsClient(k.https_port, tls=True)
    R.check(c.status == 101, "wss:// handshake on the HTTPS listener")
    jid = c.login("alice", "alice-pw", resource="wss")
    R.check(jid == "alice@localhost/wss", "logged in over wss://")
    c.send("<presence xmlns='jabber:client'/>")
    by.tcp.message("alice@localhost/wss", "over tls")
    R.check(c.expect_message("over tls") is not None, "a message arrives over wss://")
    c.message("carol@localhost/tcp", "from wss")
    R.check(by.tcp.expect_message("from wss", timeout=10) is not None, "and one leaves over it")
    c.send_frame(2, b"x")
    R.check(c.close_code() == 1003, "a binary frame over wss://: 1003")
    c.shutdown()
    c = WsClient(k.https_port, tls=True, connect=False)
    R.check(c.upgrade(protocol=None) == 400, "wss:// without the subprotocol: 400")
    c.shutdown()
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    import http.client
    conn = http.client.HTTPSConnection("127.0.0.1", k.https_port, context=ctx, timeout=10)
    conn.request("GET", "/.well-known/host-meta.json")
    r = conn.getresponse()
    body = r.read()
    R.check(r.status == 200 and f"wss://127.0.0.1:{k.https_port}/xmpp-websocket".encode() in body,
            "host-meta over HTTPS names wss://")
    conn.close()
    by.chat("wss://")


def connection_cap(args):
    """[limits] http_per_address (4 here) on a kabard of its own: open HTTP and HTTPS connections
    from one address past it are closed unread, the two listeners counting together; a
    WebSocket session no longer counts once upgraded; a place freed serves again."""
    import http.client
    http_port = free_port()
    https_port = free_port()
    k = kabartest.Kabard(args, config="[limits]\nhttp_per_address = 4\n",
                         extra_flags=["--http", f"127.0.0.1:{http_port}", "--https",
                                      f"127.0.0.1:{https_port}"])
    with k:
        k.add_user("alice", "alice-pw")
        ws = WsClient(http_port)
        ws.login("alice", "alice-pw", resource="ws")
        held = []

        def served(conn):
            try:
                conn.request("GET", "/.well-known/host-meta")
                r = conn.getresponse()
                r.read()
                return r.status == 200
            except (OSError, http.client.HTTPException):
                return False

        # Three plain and one TLS connection, each kept open after an answer (keep-alive).
        for _ in range(3):
            c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
            R.check(served(c), "cap: a connection under the cap is served")
            held.append(c)
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = http.client.HTTPSConnection("127.0.0.1", https_port, context=ctx, timeout=10)
        R.check(served(c), "cap: the fourth, over HTTPS, is served (the WebSocket session "
                "does not count)")
        held.append(c)

        def closed_unread(port):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                return s.recv(1) == b""
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
            finally:
                s.close()

        R.check(closed_unread(http_port), "cap: a fifth HTTP connection is closed unread")
        R.check(closed_unread(https_port), "cap: so is a fifth over HTTPS (counted together)")
        held.pop(0).close()
        again = False
        deadline = time.time() + 10
        while not again and time.time() < deadline:
            c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
            again = served(c)
            c.close()
            if not again:
                time.sleep(0.1)
        R.check(again, "cap: a connection closed frees its place")
        ws.message("alice@localhost/ws", "still here")
        R.check(ws.expect_message("still here", timeout=10) is not None,
                "cap: the WebSocket session carries on")
        for c in held:
            c.close()
        ws.shutdown()
        R.check(k.alive(), "cap: kabard still running")


def main():
    args = kabartest.parse_args()
    http_port = free_port()
    https_port = free_port()
    k = kabartest.Kabard(args, extra_flags=["--http", f"127.0.0.1:{http_port}", "--https",
                                            f"127.0.0.1:{https_port}", "--threads", "3"])
    k.http_port = http_port
    k.https_port = https_port
    with k:
        for u in ("alice", "bob", "carol", "dave", "erin"):
            k.add_user(u, u + "-pw")
        handshake(k)
        by = Bystanders(k)
        R.section(login_and_chat)(k, by)
        R.section(bad_input)(k, by)
        R.section(host_meta)(k)
        R.section(stream_management)(k, by)
        R.section(over_tls)(k, by)
        R.check(k.alive(), "kabard still running")
    R.section(connection_cap)(args)
    R.finish()


if __name__ == "__main__":
    main()
