#!/usr/bin/python3
"""External service discovery (XEP-0215): kabard announces its STUN/TURN servers and its SOCKS5
proxy, and hands out TURN credentials by coturn's shared-secret scheme. The credentials are
checked against a real coturn (Debian's, started here on loopback with use-auth-secret): a TURN
Allocate with them succeeds, one with a wrong password is refused."""
import base64
import hashlib
import hmac
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import error_condition, login, q, tostr  # noqa: E402

R = kabartest.Results("extdisco")
NS = "urn:xmpp:extdisco:2"
SECRET = "turn-shared-secret"
TTL = 600


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- a minimal TURN client (RFC 5389 / RFC 5766 long-term credentials) ----------------------
MAGIC = 0x2112A442


def attr(t, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", t, len(value)) + value + b"\0" * pad


def stun(msg_type, tid, attrs, key=None):
    body = b"".join(attrs)
    if key is not None:
        # MESSAGE-INTEGRITY over the message with its length already counting that attribute.
        head = struct.pack("!HHI", msg_type, len(body) + 24, MAGIC) + tid
        mac = hmac.new(key, head + body, hashlib.sha1).digest()
        body += attr(0x0008, mac)
    return struct.pack("!HHI", msg_type, len(body), MAGIC) + tid + body


def parse(data):
    msg_type, length, _ = struct.unpack("!HHI", data[:8])
    attrs, i = {}, 20
    while i + 4 <= 20 + length:
        t, n = struct.unpack("!HH", data[i:i + 4])
        attrs[t] = data[i + 4:i + 4 + n]
        i += 4 + n + (4 - n % 4) % 4
    return msg_type, attrs


def allocate(port, username, password, realm_hint=None):
    """Returns ("ok", None) or ("error", code)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    transport = attr(0x0019, bytes([17, 0, 0, 0]))  # REQUESTED-TRANSPORT: UDP
    tid = os.urandom(12)
    s.sendto(stun(0x0003, tid, [transport]), ("127.0.0.1", port))
    msg_type, a = parse(s.recv(2048))
    if msg_type != 0x0113 or 0x0014 not in a or 0x0015 not in a:
        return ("unexpected", hex(msg_type))
    realm, nonce = a[0x0014], a[0x0015]
    key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
    tid = os.urandom(12)
    s.sendto(stun(0x0003, tid, [transport, attr(0x0006, username.encode()), attr(0x0014, realm),
                                attr(0x0015, nonce)], key), ("127.0.0.1", port))
    msg_type, a = parse(s.recv(2048))
    s.close()
    if msg_type == 0x0103:
        return ("ok", None)
    code = a.get(0x0009, b"\0\0\0\0")
    return ("error", code[2] * 100 + code[3])


def services(c, extra=""):
    r = c.iq("get", "<services xmlns='%s'%s/>" % (NS, extra), to="localhost")
    return r, {(e.get("type"), e.get("host"), e.get("port")): e
               for e in r.iter(q(NS, "service"))}


def main():
    args = kabartest.parse_args()
    stun_port = free_udp_port()
    proxy_port = kabartest.free_port()
    config = ("[extdisco]\nservices = [\"stun:127.0.0.1:%d\", \"turn:127.0.0.1:%d?transport=udp\"]\n"
              "turn_secret = \"%s\"\ncredential_ttl = %d\n" % (stun_port, stun_port, SECRET, TTL))
    k = kabartest.Kabard(args, config=config,
                         extra_flags=("--proxy65", "127.0.0.1:%d" % proxy_port))
    work = tempfile.mkdtemp(prefix="kabar-coturn-")
    turn = None
    with k:
        k.add_user("alice", "alice-pw")
        a = login(k.port, "alice", "alice-pw", resource="x")
        r, svc = services(a)
        R.check(r.get("type") == "result", "services query answered (%s)" % tostr(r)[:300])
        st = svc.get(("stun", "127.0.0.1", str(stun_port)))
        tu = svc.get(("turn", "127.0.0.1", str(stun_port)))
        px = svc.get(("socks5", "127.0.0.1", str(proxy_port)))
        R.check(st is not None and st.get("transport") == "udp" and st.get("username") is None,
                "the STUN server is announced, without credentials")
        R.check(px is not None and px.get("name") == "proxy.localhost",
                "the SOCKS5 proxy is announced (%s)" % (tostr(px) if px is not None else None))
        R.check(tu is not None and tu.get("restricted") in ("1", "true"),
                "the TURN server is announced with credentials")
        user, pw = tu.get("username", ""), tu.get("password", "")
        expiry = int(user.split(":")[0]) if ":" in user else 0
        R.check(user.endswith(":alice@localhost") and abs(expiry - (time.time() + TTL)) < 30,
                "TURN username is EXPIRY:alice@localhost, expiring in %d s (%s)" % (TTL, user))
        want = base64.b64encode(hmac.new(SECRET.encode(), user.encode(), hashlib.sha1).digest())
        R.check(pw == want.decode(), "TURN password is base64(HMAC-SHA1(secret, username))")
        r, only = services(a, " type='turn'")
        R.check(list(only) == [("turn", "127.0.0.1", str(stun_port))],
                "a type filter returns only that type (%s)" % list(only))
        r = a.iq("get", "<credentials xmlns='%s'><service host='127.0.0.1' type='turn'/>"
                 "</credentials>" % NS, to="localhost")
        cred = r.find("%s/%s" % (q(NS, "credentials"), q(NS, "service")))
        R.check(cred is not None and cred.get("password"), "credentials request answered")
        r = a.iq("get", "<credentials xmlns='%s'><service host='nowhere' type='turn'/>"
                 "</credentials>" % NS, to="localhost")
        R.check(error_condition(r) == "item-not-found", "credentials for an unknown service -> "
                "item-not-found (%s)" % error_condition(r))

        # The credentials against a real coturn with the same shared secret.
        if shutil.which("turnserver") is None:
            R.check(False, "turnserver (Debian's coturn) is installed")
        else:
            turn = subprocess.Popen(
                ["turnserver", "-n", "--listening-ip=127.0.0.1",
                 "--listening-port=%d" % stun_port, "--relay-ip=127.0.0.1",
                 "--min-port=49152", "--max-port=65535", "--use-auth-secret",
                 "--static-auth-secret=%s" % SECRET, "--realm=localhost", "--no-tls",
                 "--no-dtls", "--no-cli", "--log-file=stdout", "--simple-log",
                 "--pidfile=%s/turn.pid" % work, "--db=%s/turndb" % work],
                stdout=open(os.path.join(work, "turn.log"), "w"), stderr=subprocess.STDOUT)
            result = ("unexpected", "no answer")
            for _ in range(50):
                try:
                    result = allocate(stun_port, user, pw)
                    break
                except (socket.timeout, ConnectionRefusedError, OSError):
                    time.sleep(0.2)
            R.check(result == ("ok", None),
                    "coturn (use-auth-secret) grants a TURN allocation with kabard's credentials "
                    "(%s)" % (result,))
            bad = allocate(stun_port, user, pw[:-2] + "AA")
            R.check(bad == ("error", 401), "a wrong TURN password is refused with 401 (%s)"
                    % (bad,))
        a.close()
        R.check(k.alive(), "kabard alive")
    if turn is not None:
        turn.terminate()
        try:
            turn.wait(timeout=5)
        except subprocess.TimeoutExpired:
            turn.kill()
    shutil.rmtree(work, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
