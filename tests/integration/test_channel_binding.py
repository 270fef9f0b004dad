"""SCRAM -PLUS with tls-unique channel binding (RFC 5802 §6, RFC 5929) on TLS 1.2 connections:
raw XML exchanges (success, another connection's binding data, the "y" downgrade flag, -PLUS
without binding) and Debian's slixmpp choosing SCRAM-SHA-256-PLUS by itself. On TLS 1.3 no
-PLUS is offered and the "y" flag is accepted."""
import asyncio
import base64
import hashlib
import hmac
import ssl
import sys

import kabartest
import xmpp_raw
from xmpp_raw import NS_SASL, q

_orig_tls_context = xmpp_raw.tls_context


def tls12_context():
    ctx = _orig_tls_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class CbScram(xmpp_raw.ScramClient):
    def __init__(self, user, password, hashname, gs2, cbdata=b""):
        super().__init__(user, password, hashname)
        self.gs2 = gs2
        self.cbdata = cbdata

    def final(self, server_first):
        # c= carries the gs2 header followed by the binding data (RFC 5802 §7), and the proof
        # covers it.
        return final_with_c(self, server_first,
                            base64.b64encode(self.gs2.encode() + self.cbdata).decode())


def final_with_c(sc, server_first, c_value):
    server_first = server_first.decode() if isinstance(server_first, bytes) else server_first
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    rnonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
    salted = hashlib.pbkdf2_hmac(sc.hashname, sc.password.encode(), salt, iters)
    client_key = hmac.new(salted, b"Client Key", sc.hashname).digest()
    stored_key = hashlib.new(sc.hashname, client_key).digest()
    without_proof = "c=%s,r=%s" % (c_value, rnonce)
    auth_message = ",".join([sc.client_first_bare, server_first, without_proof]).encode()
    client_sig = hmac.new(stored_key, auth_message, sc.hashname).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
    server_key = hmac.new(salted, b"Server Key", sc.hashname).digest()
    sc.server_signature = hmac.new(server_key, auth_message, sc.hashname).digest()
    return ("%s,p=%s" % (without_proof, base64.b64encode(proof).decode())).encode()


def scram_exchange(conn, mech, sc):
    conn.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='%s'>%s</auth>"
              % (mech, base64.b64encode(sc.first()).decode()))
    el = conn._sasl_outcome(allow_challenge=True)
    if el.tag != q(NS_SASL, "challenge"):
        return el, False
    conn.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>"
              % base64.b64encode(sc.final(base64.b64decode(el.text or ""))).decode())
    el = conn._sasl_outcome()
    verified = el.tag == q(NS_SASL, "success") and sc.verify(base64.b64decode(el.text or ""))
    return el, verified


def tls12_conn(port):
    xmpp_raw.tls_context = tls12_context
    try:
        c = xmpp_raw.Conn(port)
        c.open_stream()
        c.starttls()
    finally:
        xmpp_raw.tls_context = _orig_tls_context
    return c


def slixmpp_login(port, jid, password, tls12):
    sys.path.insert(0, "/usr/lib/python3/dist-packages")
    import slixmpp

    result = {"ok": False, "mech": None}

    async def go():
        client = slixmpp.ClientXMPP(jid, password)
        client.ssl_context.check_hostname = False
        client.ssl_context.verify_mode = ssl.CERT_NONE
        if tls12:
            client.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
        done = asyncio.get_event_loop().create_future()
        client.add_event_handler("session_start", lambda _: done.done() or done.set_result(True))
        client.add_event_handler("failed_auth", lambda _: done.done() or done.set_result(False))
        client.add_event_handler("connection_failed",
                                 lambda _: done.done() or done.set_result(False))
        client.connect(("127.0.0.1", port), force_starttls=True)
        try:
            result["ok"] = await asyncio.wait_for(done, 15)
        except asyncio.TimeoutError:
            result["ok"] = False
        mech = client["feature_mechanisms"].mech
        result["mech"] = mech.name if mech is not None else None
        client.disconnect()
        await asyncio.sleep(0.2)

    asyncio.run(go())
    return result


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_channel_binding")
    with kabartest.Kabard(args) as k:
        k.add_user("alice", "secret-a")

        # TLS 1.2: -PLUS offered, with XEP-0440 naming tls-unique.
        c = tls12_conn(k.port)
        mechs = c.mechanisms()
        R.check(mechs[:2] == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"],
                f"TLS 1.2: -PLUS mechanisms offered first: {mechs}")
        cb = c.features.find("{urn:xmpp:sasl-cb:0}sasl-channel-binding")
        types = [x.get("type") for x in cb] if cb is not None else []
        R.check(types == ["tls-unique"], f"XEP-0440 names tls-unique: {types}")
        unique = c.sock.get_channel_binding("tls-unique")
        for mech, h in (("SCRAM-SHA-256-PLUS", "sha256"), ("SCRAM-SHA-1-PLUS", "sha1")):
            if mech != "SCRAM-SHA-256-PLUS":
                c = tls12_conn(k.port)
                unique = c.sock.get_channel_binding("tls-unique")
            el, verified = scram_exchange(c, mech, CbScram("alice", "secret-a", h,
                                                           "p=tls-unique,,", unique))
            R.check(el.tag == q(NS_SASL, "success") and verified,
                    f"{mech} with this connection's tls-unique succeeds")
            if el.tag == q(NS_SASL, "success"):
                c.open_stream()
                c.bind()
                R.check(c.jid.startswith("alice@localhost/"), f"{mech}: bound {c.jid}")
            c.close()

        # Another connection's binding data (a relaying man in the middle) fails.
        other = tls12_conn(k.port)
        foreign = other.sock.get_channel_binding("tls-unique")
        c = tls12_conn(k.port)
        el, _ = scram_exchange(c, "SCRAM-SHA-256-PLUS",
                               CbScram("alice", "secret-a", "sha256", "p=tls-unique,,", foreign))
        R.check(el.tag == q(NS_SASL, "failure"), "another connection's tls-unique is refused")
        c.close()
        other.close()

        # "y" while -PLUS was offered: a downgrade (RFC 5802 §6).
        c = tls12_conn(k.port)
        el, _ = scram_exchange(c, "SCRAM-SHA-256",
                               CbScram("alice", "secret-a", "sha256", "y,,"))
        R.check(el.tag == q(NS_SASL, "failure"), "flag 'y' with -PLUS offered is refused")
        c.close()

        # -PLUS without binding, and an unknown binding type.
        c = tls12_conn(k.port)
        el, _ = scram_exchange(c, "SCRAM-SHA-256-PLUS",
                               CbScram("alice", "secret-a", "sha256", "n,,"))
        R.check(el.tag == q(NS_SASL, "failure"), "-PLUS with flag 'n' is refused")
        c.close()
        c = tls12_conn(k.port)
        el, _ = scram_exchange(c, "SCRAM-SHA-256-PLUS",
                               CbScram("alice", "secret-a", "sha256", "p=tls-exporter,,", b"x"))
        R.check(el.tag == q(NS_SASL, "failure"), "an unsupported binding type is refused")
        c.close()

        # Plain SCRAM still works on TLS 1.2 with flag 'n'.
        c = tls12_conn(k.port)
        el = c.sasl_scram("alice", "secret-a")
        R.check(el.tag == q(NS_SASL, "success"), "TLS 1.2: SCRAM-SHA-256 with 'n' still works")
        c.close()

        # TLS 1.3: no -PLUS; a client that could bind says 'y' and is accepted.
        c = xmpp_raw.Conn(k.port)
        c.open_stream()
        c.starttls()
        R.check(c.sock.version() == "TLSv1.3", f"default TLS is 1.3 ({c.sock.version()})")
        R.check(not any(m.endswith("-PLUS") for m in c.mechanisms()),
                f"TLS 1.3: no -PLUS offered: {c.mechanisms()}")
        el, verified = scram_exchange(c, "SCRAM-SHA-256",
                                      CbScram("alice", "secret-a", "sha256", "y,,"))
        R.check(el.tag == q(NS_SASL, "success") and verified, "TLS 1.3: flag 'y' accepted")
        c.close()

        # A real client: slixmpp picks SCRAM-SHA-256-PLUS over TLS 1.2 and logs in.
        r = slixmpp_login(k.port, "alice@localhost", "secret-a", tls12=True)
        R.check(r["ok"], f"slixmpp over TLS 1.2 logs in (mechanism {r['mech']})")
        R.check(r["mech"] == "SCRAM-SHA-256-PLUS", f"slixmpp chose {r['mech']}")
        r = slixmpp_login(k.port, "alice@localhost", "secret-a", tls12=False)
        R.check(r["ok"], f"slixmpp over TLS 1.3 logs in (mechanism {r['mech']})")
        r = slixmpp_login(k.port, "alice@localhost", "wrong", tls12=True)
        R.check(not r["ok"], "slixmpp with a wrong password over -PLUS fails")
    R.finish()


if __name__ == "__main__":
    main()
