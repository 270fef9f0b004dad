"""A small XMPP-over-WebSocket client for the integration tests (stdlib only, RFC 6455 and
RFC 7395 by hand), so that tests can also send what a well-behaved client never would: unmasked
or binary frames, bad opcodes, a stanza split over two messages.

Every text message received is parsed on its own with ElementTree: RFC 7395 §3.3.3 says each is
one complete element, parsable alone, so a frame that relies on a namespace declared elsewhere
fails here.
"""
import base64
import hashlib
import os
import socket
import ssl
import struct
import time
import xml.etree.ElementTree as ET

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SM = "urn:xmpp:sm:3"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsError(Exception):
    pass


def q(ns, name):
    return "{%s}%s" % (ns, name)


def handshake_request(host, port, path="/xmpp-websocket", protocol="xmpp", origin=None,
                      key=None, extra=None):
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    lines += list(extra or [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def frame(opcode, payload, fin=True, mask=True, rsv=0):
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


class WsClient:
    """One WebSocket connection. `tls`: wss:// (TLS 1.3 or 1.2, certificate not checked)."""

    def __init__(self, port, host="127.0.0.1", tls=False, protocol="xmpp", origin=None,
                 timeout=10.0, connect=True):
        self.port = port
        self.host = host
        self.timeout = timeout
        raw = socket.create_connection((host, port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            raw = ctx.wrap_socket(raw, server_hostname="localhost")
        self.sock = raw
        self.buf = b""
        self.closed = False
        self.status = None
        self.headers = {}
        self.body = b""
        if connect:
            self.upgrade(protocol=protocol, origin=origin)

    # --- HTTP
    def upgrade(self, protocol="xmpp", origin=None, extra=None):
        req, key = handshake_request(self.host, self.port, protocol=protocol, origin=origin,
                                     extra=extra)
        self.sock.sendall(req)
        head = self._read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        if self.status != 101:
            n = int(self.headers.get("content-length", "0"))
            while len(self.buf) < n:
                self._recv()
            self.body, self.buf = self.buf[:n], self.buf[n:]
            return self.status
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if self.headers.get("sec-websocket-accept") != want:
            raise WsError("bad Sec-WebSocket-Accept")
        return self.status

    def _recv(self, deadline=None):
        if deadline is not None:
            self.sock.settimeout(max(0.01, deadline - time.time()))
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise WsError("connection closed")
        self.buf += data

    def _read_until(self, marker):
        while marker not in self.buf:
            self._recv()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    # --- frames
    def send_frame(self, opcode, payload, **kw):
        self.sock.sendall(frame(opcode, payload, **kw))

    def send(self, text):
        self.send_frame(1, text)

    def next_frame(self, timeout=None):
        """(opcode, payload bytes) of the next frame the server sent (unfragmented)."""
        deadline = time.time() + (timeout or self.timeout)
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                if b1 & 0x80:
                    raise WsError("masked frame from the server")
                n = b1 & 0x7F
                at = 2
                if n == 126:
                    if len(self.buf) >= 4:
                        n = struct.unpack(">H", self.buf[2:4])[0]
                        at = 4
                    else:
                        n = None
                elif n == 127:
                    if len(self.buf) >= 10:
                        n = struct.unpack(">Q", self.buf[2:10])[0]
                        at = 10
                    else:
                        n = None
                if n is not None and len(self.buf) >= at + n:
                    payload = self.buf[at:at + n]
                    self.buf = self.buf[at + n:]
                    if not b0 & 0x80:
                        raise WsError("fragmented frame from the server")
                    return b0 & 0x0F, payload
            if time.time() > deadline:
                raise TimeoutError("no frame")
            try:
                self._recv(deadline)
            except socket.timeout:
                raise TimeoutError("no frame")

    def next_element(self, timeout=None):
        """The next text message, parsed alone. Control frames: pong is skipped; a close frame
        raises WsError with its code."""
        while True:
            op, payload = self.next_frame(timeout)
            if op == 1:
                return ET.fromstring(payload.decode("utf-8"))
            if op == 8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise WsClosed(code)
            if op == 0xA:
                continue
            raise WsError(f"unexpected opcode {op}")

    def expect(self, pred, timeout=None, what="element"):
        deadline = time.time() + (timeout or self.timeout)
        while True:
            el = self.next_element(max(0.05, deadline - time.time()))
            if pred(el):
                return el

    def close_code(self, timeout=None):
        """Reads until the server's close frame; its code."""
        deadline = time.time() + (timeout or self.timeout)
        while True:
            try:
                op, payload = self.next_frame(max(0.05, deadline - time.time()))
            except WsError:
                return None
            if op == 8:
                return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005

    def wait_eof(self, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                self._recv(deadline)
                self.buf = b""
            except WsError:
                return True
            except (socket.timeout, TimeoutError):
                return False
            except OSError:
                return True
        return False

    def abort(self):
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    def shutdown(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # --- XMPP
    def open(self, domain="localhost"):
        self.send(f"<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>")
        opened = self.next_element()
        if opened.tag != q(NS_FRAMING, "open"):
            raise WsError("expected <open/>, got " + opened.tag)
        features = self.next_element()
        if features.tag != q(NS_STREAM, "features"):
            raise WsError("expected <stream:features/>, got " + features.tag)
        return opened, features

    def login(self, user, password, resource="ws", domain="localhost"):
        self.open(domain)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        el = self.next_element()
        if el.tag != q(NS_SASL, "success"):
            raise WsError("authentication failed: " + el.tag)
        _, features = self.open(domain)
        self.features = features
        self.send(f"<iq xmlns='jabber:client' type='set' id='bind1'><bind xmlns='{NS_BIND}'>"
                  f"<resource>{resource}</resource></bind></iq>")
        el = self.expect(lambda e: e.tag == q(NS_CLIENT, "iq") and e.get("id") == "bind1")
        if el.get("type") != "result":
            raise WsError("bind failed")
        self.jid = el.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text
        return self.jid

    def message(self, to, body):
        self.send(f"<message xmlns='jabber:client' to='{to}' type='chat'><body>{body}</body>"
                  f"</message>")

    def expect_message(self, body, timeout=None):
        return self.expect(lambda e: e.tag == q(NS_CLIENT, "message") and
                           e.findtext(q(NS_CLIENT, "body")) == body, timeout)


class WsClosed(WsError):
    def __init__(self, code):
        super().__init__(f"close frame {code}")
        self.code = code
