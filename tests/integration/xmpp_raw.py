"""A small raw-XML XMPP client for the integration tests (stdlib only).

It speaks the client side of RFC 6120 by hand: plain connect or direct TLS, the stream header,
STARTTLS, SASL PLAIN and SCRAM-SHA-1/-256, resource binding, and then lets a test send raw XML
and wait for exact elements. Incoming XML is parsed incrementally with XMLPullParser; the
stream root is stream:stream and every complete child of it is one received element
(an xml.etree.ElementTree.Element with namespaced tags such as '{jabber:client}message').

Elements that arrive but are not what a test waits for stay queued, so stanzas that arrive in an
unpredictable order (presence, roster pushes) can be waited for one by one.
"""
import base64
import hashlib
import hmac
import os
import re
import socket
import ssl
import time
import xml.etree.ElementTree as ET

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_ROSTER = "jabber:iq:roster"
NS_REGISTER = "jabber:iq:register"
NS_PING = "urn:xmpp:ping"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_VERSION = "jabber:iq:version"
NS_LAST = "jabber:iq:last"
NS_VCARD = "vcard-temp"
NS_DELAY = "urn:xmpp:delay"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

DEFAULT_TIMEOUT = 5.0


class XmppError(Exception):
    pass


class Timeout(XmppError):
    pass


class StreamClosed(XmppError):
    """The server closed the stream (</stream:stream>) or the connection."""


def q(ns, name):
    """Clark notation: q(NS_CLIENT, 'message') -> '{jabber:client}message'."""
    return "{%s}%s" % (ns, name)


def tostr(el):
    return ET.tostring(el, encoding="unicode") if el is not None else "None"


def xml_escape(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


def error_condition(el):
    """The defined condition of a stanza <error/> (or of a stream error): its local name."""
    err = el.find(q(NS_CLIENT, "error"))
    if err is None:
        err = el
    for child in err:
        if child.tag.startswith("{%s}" % NS_STANZAS) or child.tag.startswith("{%s}" % NS_STREAMS):
            name = child.tag.split("}", 1)[1]
            if name != "text":
                return name
    return None


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # kabard's certificate is self-signed in the tests
    return ctx


# ---------------------------------------------------------------------------------------------
# SCRAM (RFC 5802 / RFC 7677), client side.

def _scram_name(user):
    return user.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(self, user, password, hashname="sha256", nonce=None):
        self.user = user
        self.password = password
        self.hashname = hashname
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.gs2 = "n,,"
        self.client_first_bare = "n=%s,r=%s" % (_scram_name(user), self.nonce)
        self.server_signature = None

    def first(self):
        return (self.gs2 + self.client_first_bare).encode()

    def final(self, server_first):
        server_first = server_first.decode() if isinstance(server_first, bytes) else server_first
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        rnonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not rnonce.startswith(self.nonce):
            raise XmppError("server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac(self.hashname, self.password.encode(), salt, iters)
        client_key = hmac.new(salted, b"Client Key", self.hashname).digest()
        stored_key = hashlib.new(self.hashname, client_key).digest()
        without_proof = "c=%s,r=%s" % (base64.b64encode(self.gs2.encode()).decode(), rnonce)
        auth_message = ",".join([self.client_first_bare, server_first, without_proof]).encode()
        client_sig = hmac.new(stored_key, auth_message, self.hashname).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        server_key = hmac.new(salted, b"Server Key", self.hashname).digest()
        self.server_signature = hmac.new(server_key, auth_message, self.hashname).digest()
        return ("%s,p=%s" % (without_proof, base64.b64encode(proof).decode())).encode()

    def verify(self, server_final):
        server_final = server_final.decode() if isinstance(server_final, bytes) else server_final
        attrs = dict(kv.split("=", 1) for kv in server_final.split(","))
        return "v" in attrs and base64.b64decode(attrs["v"]) == self.server_signature


# ---------------------------------------------------------------------------------------------

class Conn:
    """One client connection. All waits have timeouts; nothing blocks forever."""

    def __init__(self, port, host="127.0.0.1", domain="localhost", direct_tls=False,
                 timeout=DEFAULT_TIMEOUT, source=None, auto_pong=False):
        self.domain = domain
        self.timeout = timeout
        self.auto_pong = auto_pong  # answer the server's XEP-0199 pings while reading
        self.pongs = 0
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = False
        if direct_tls:
            self.sock = tls_context().wrap_socket(self.sock, server_hostname=domain)
            self.tls = True
        self.raw = bytearray()     # every byte received (after TLS), for regex checks
        self.queue = []            # complete top-level elements not consumed yet
        self.header = None         # attributes of the server's stream header
        self.features = None
        self.closed = False        # </stream:stream> seen
        self.eof = False           # the TCP connection ended
        self.jid = None
        self._id = 0
        self._new_parser()

    # ---- low level ----
    def _new_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root = None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def next_id(self, prefix="r"):
        self._id += 1
        return "%s%d" % (prefix, self._id)

    def _feed(self, data):
        self.raw += data
        self.parser.feed(data)
        for event, el in self.parser.read_events():
            if event == "start":
                self.depth += 1
                if self.depth == 1:
                    self.root = el
                    self.header = dict(el.attrib)
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.root.remove(el)
                    if self.auto_pong and el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get" \
                            and el.find(q(NS_PING, "ping")) is not None:
                        self.send("<iq type='result' id='%s' to='%s'/>"
                                  % (xml_escape(el.get("id") or ""), xml_escape(el.get("from") or "")))
                        self.pongs += 1
                        continue
                    self.queue.append(el)
                elif self.depth == 0:
                    self.closed = True

    def _read_some(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout("timed out")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout("timed out")
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError) as e:
            self.eof = True
            raise StreamClosed("connection error: %s" % e)
        if not data:
            self.eof = True
            raise StreamClosed("connection closed by the server")
        self._feed(data)

    def wait_for(self, pred, timeout=None, what="element"):
        """Returns (and removes from the queue) the first received element for which pred(el)
        is true, reading more as needed. Raises Timeout or StreamClosed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i, el in enumerate(self.queue):
                if pred(el):
                    return self.queue.pop(i)
            if self.closed or self.eof:
                raise StreamClosed("stream closed while waiting for %s; queued: %s"
                                   % (what, [tostr(e) for e in self.queue]))
            try:
                self._read_some(deadline)
            except Timeout:
                raise Timeout("timed out waiting for %s; queued: %s"
                              % (what, [tostr(e) for e in self.queue]))

    def expect(self, tag, timeout=None, **attrs):
        """Waits for an element with this Clark-notation tag and these attribute values
        (attribute names with '_' for '-' are not needed in XMPP; use attrs={'xml:lang': ..}
        style via wait_for for exotic ones)."""
        def pred(el):
            return el.tag == tag and all(el.get(k) == v for k, v in attrs.items())
        return self.wait_for(pred, timeout, what="%s %s" % (tag, attrs))

    def expect_raw(self, regex, timeout=None):
        """Waits until the received bytes match regex (bytes or str); returns the match."""
        if isinstance(regex, str):
            regex = regex.encode()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            m = re.search(regex, bytes(self.raw))
            if m:
                return m
            if self.eof:
                raise StreamClosed("connection closed while waiting for %r" % regex)
            try:
                self._read_some(deadline)
            except Timeout:
                raise Timeout("timed out waiting for %r; got %r" % (regex, bytes(self.raw[-500:])))
            except XmppError:
                raise
            except ET.ParseError:
                pass

    def drain(self, timeout=0.3):
        """Reads whatever arrives within `timeout`; returns the queued elements and clears them."""
        deadline = time.monotonic() + timeout
        try:
            while not (self.closed or self.eof):
                self._read_some(deadline)
        except (Timeout, StreamClosed):
            pass
        out, self.queue = self.queue, []
        return out

    def pump(self, timeout=0.0):
        """Reads whatever arrives within `timeout` into the queue (nothing is consumed)."""
        deadline = time.monotonic() + max(timeout, 0.001)
        try:
            while not (self.closed or self.eof):
                self._read_some(deadline)
        except (Timeout, StreamClosed):
            pass

    def stream_error(self, timeout=None):
        """Waits for <stream:error/>; returns its condition name."""
        el = self.expect(q(NS_STREAM, "error"), timeout)
        return error_condition(el)

    def wait_closed(self, timeout=None):
        """True once the server has closed the TCP connection (reads to EOF)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.eof:
            try:
                self._read_some(deadline)
            except Timeout:
                return False
            except StreamClosed:
                return True
            except ET.ParseError:
                pass
        return True

    def close(self, graceful=True):
        try:
            if graceful and not self.eof:
                self.send("</stream:stream>")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Abrupt close: RST, no </stream:stream>."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- stream negotiation ----
    def open_stream(self, to=None, extra=""):
        """Sends the stream header; waits for the answer header and <stream:features/>."""
        self._new_parser()
        self.queue = []
        self.features = None
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0' "
                  "xml:lang='en'%s>" % (to or self.domain, extra))
        self.features = self.expect(q(NS_STREAM, "features"))
        return self.features

    def starttls(self):
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.expect(q(NS_TLS, "proceed"))
        self.sock.settimeout(self.timeout)
        self.sock = tls_context().wrap_socket(self.sock, server_hostname=self.domain)
        self.tls = True
        return self.open_stream()

    def mechanisms(self):
        m = self.features.find(q(NS_SASL, "mechanisms")) if self.features is not None else None
        return [x.text for x in m] if m is not None else []

    def sasl_plain(self, user, password):
        """Returns the <success/> or <failure/> element."""
        payload = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
                  % payload)
        return self._sasl_outcome()

    def _sasl_outcome(self, allow_challenge=False):
        def pred(el):
            return el.tag in (q(NS_SASL, "success"), q(NS_SASL, "failure")) or (
                allow_challenge and el.tag == q(NS_SASL, "challenge"))
        return self.wait_for(pred, what="SASL outcome")

    def sasl_scram(self, user, password, hashname="sha256"):
        """Returns the <success/> (verified) or <failure/> element."""
        mech = {"sha256": "SCRAM-SHA-256", "sha1": "SCRAM-SHA-1"}[hashname]
        sc = ScramClient(user, password, hashname)
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='%s'>%s</auth>"
                  % (mech, base64.b64encode(sc.first()).decode()))
        el = self._sasl_outcome(allow_challenge=True)
        if el.tag != q(NS_SASL, "challenge"):
            return el
        self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>"
                  % base64.b64encode(sc.final(base64.b64decode(el.text or ""))).decode())
        el = self._sasl_outcome()
        if el.tag == q(NS_SASL, "success"):
            if not sc.verify(base64.b64decode(el.text or "")):
                raise XmppError("the server signature in <success/> does not verify")
        return el

    def authenticate(self, user, password, mech="SCRAM-SHA-256"):
        if mech == "PLAIN":
            el = self.sasl_plain(user, password)
        else:
            el = self.sasl_scram(user, password, "sha1" if mech == "SCRAM-SHA-1" else "sha256")
        if el.tag != q(NS_SASL, "success"):
            raise XmppError("authentication failed: %s" % tostr(el))
        return self.open_stream()

    def bind(self, resource=None):
        iid = self.next_id("bind")
        res = "<resource>%s</resource>" % xml_escape(resource) if resource is not None else ""
        self.send("<iq type='set' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>%s"
                  "</bind></iq>" % (iid, res))
        el = self.expect(q(NS_CLIENT, "iq"), id=iid)
        if el.get("type") != "result":
            raise XmppError("bind failed: %s" % tostr(el))
        self.jid = el.find("%s/%s" % (q(NS_BIND, "bind"), q(NS_BIND, "jid"))).text
        return el

    def iq(self, type_, payload, to=None, timeout=None):
        """Sends an iq with a payload (XML string) and returns the response (result or error)."""
        iid = self.next_id("iq")
        to_attr = " to='%s'" % xml_escape(to) if to else ""
        self.send("<iq type='%s' id='%s'%s>%s</iq>" % (type_, iid, to_attr, payload))
        return self.wait_for(lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("id") == iid
                             and el.get("type") in ("result", "error"), timeout,
                             what="iq response %s" % iid)

    def message(self, to, body, type_="chat", id_=None):
        id_attr = " id='%s'" % xml_escape(id_) if id_ else ""
        self.send("<message to='%s' type='%s'%s><body>%s</body></message>"
                  % (xml_escape(to), type_, id_attr, xml_escape(body)))

    def presence(self, extra="", **attrs):
        a = "".join(" %s='%s'" % (k.rstrip("_"), xml_escape(v)) for k, v in attrs.items())
        self.send("<presence%s>%s</presence>" % (a, extra) if extra else "<presence%s/>" % a)

    def expect_message(self, body=None, timeout=None, **attrs):
        def pred(el):
            if el.tag != q(NS_CLIENT, "message"):
                return False
            if any(el.get(k) != v for k, v in attrs.items()):
                return False
            if body is not None and el.findtext(q(NS_CLIENT, "body")) != body:
                return False
            return True
        return self.wait_for(pred, timeout, what="message %r %s" % (body, attrs))

    def expect_presence(self, timeout=None, **attrs):
        def pred(el):
            return el.tag == q(NS_CLIENT, "presence") and all(
                el.get(k.rstrip("_")) == v for k, v in attrs.items())
        return self.wait_for(pred, timeout, what="presence %s" % attrs)


def login(port, user, password, resource=None, mech="SCRAM-SHA-256", domain="localhost",
          direct_tls=False, timeout=DEFAULT_TIMEOUT, source=None, auto_pong=False):
    """Connect, STARTTLS (unless direct TLS), authenticate and bind."""
    c = Conn(port, domain=domain, direct_tls=direct_tls, timeout=timeout, source=source,
             auto_pong=auto_pong)
    c.open_stream()
    if not direct_tls:
        c.starttls()
    c.authenticate(user, password, mech)
    c.bind(resource)
    return c


def online(port, user, password, resource=None, roster=True, **kw):
    """login() plus a roster get (so roster pushes come) and initial presence."""
    c = login(port, user, password, resource, **kw)
    if roster:
        r = c.iq("get", "<query xmlns='jabber:iq:roster'/>")
        if r.get("type") != "result":
            raise XmppError("roster get failed: %s" % tostr(r))
    c.presence()
    return c


_marker = [0]


def until_marker(rcpt, sender):
    """Sends a marker message from `sender` to `rcpt` and returns what `rcpt` got before it. A
    headline: never copied as a carbon itself (XEP-0280 §6.1)."""
    _marker[0] += 1
    body = "marker-%d" % _marker[0]
    sender.message(rcpt.jid, body, type_="headline")
    rcpt.expect_message(body)
    got, rcpt.queue = rcpt.queue, []
    return got


def carbon(el, flag):
    """The message inside a <sent/>/<received/> carbon (XEP-0280), or None."""
    if el.tag != q(NS_CLIENT, "message"):
        return None
    f = el.find(q(NS_CARBONS, flag))
    fwd = f.find(q(NS_FORWARD, "forwarded")) if f is not None else None
    return fwd.find(q(NS_CLIENT, "message")) if fwd is not None else None


def enable_carbons(c):
    """Enables carbons on `c`; True when the server answered result."""
    r = c.iq("set", "<enable xmlns='%s'/>" % NS_CARBONS)
    return r.get("type") == "result"


def vmrss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1
