"""Raw XML in, exact stanzas and errors out: stream negotiation, SASL, binding, the basic IQs,
routing, roster, subscriptions, presence, offline storage, in-band registration, shutdown."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import (NS_BIND, NS_CLIENT, NS_DELAY, NS_DISCO_INFO, NS_LAST, NS_PING,  # noqa: E402
                      NS_REGISTER, NS_ROSTER, NS_SASL, NS_STREAM, NS_TLS, NS_VCARD, NS_VERSION,
                      XML_LANG, Conn, StreamClosed, XmppError, error_condition, login, online, q,
                      tostr)

R = kabartest.Results("raw_protocol")
DOMAIN = "localhost"
PW = {"alice": "alice-pw", "bob": "b0b pässword", "carol": "carol-pw", "dave": "dave-pw",
      "erin": "erin-pw", "frank": "frank-pw", "wrong": "right-pw", "gina": "gina-pw"}


section = R.section


def iq_ok(r):
    return r.get("type") == "result"


def roster_items(query):
    return {i.get("jid"): i for i in query.findall(q(NS_ROSTER, "item"))}


def expect_push(c, jid, timeout=None, **want):
    """Waits for a roster push about `jid` whose item has the attribute values `want` (earlier
    pushes about it stay queued); returns its <item/>, the push's ver, and the push."""
    def pred(el):
        if el.tag != q(NS_CLIENT, "iq") or el.get("type") != "set":
            return False
        qq = el.find(q(NS_ROSTER, "query"))
        item = qq.find(q(NS_ROSTER, "item")) if qq is not None else None
        return item is not None and item.get("jid") == jid and all(
            item.get(k) == v for k, v in want.items())
    el = c.wait_for(pred, timeout, what="roster push for %s %s" % (jid, want))
    qq = el.find(q(NS_ROSTER, "query"))
    # RFC 6121 §2.1.6: the client answers pushes.
    c.send("<iq type='result' id='%s'/>" % el.get("id"))
    return qq.find(q(NS_ROSTER, "item")), qq.get("ver"), el


@section
def stream_header(k):
    c = Conn(k.port)
    f = c.open_stream()
    h = c.header
    R.check(h.get("from") == DOMAIN, "stream header from='localhost' (%s)" % h.get("from"))
    R.check(bool(h.get("id")) and len(h.get("id")) >= 8, "stream header has an id")
    R.check(h.get("version") == "1.0", "stream header version='1.0'")
    R.check(c.root.tag == q(NS_STREAM, "stream"), "root is stream:stream in the streams namespace")
    R.check(re.search(rb"<stream:stream[^>]*xmlns='jabber:client'", bytes(c.raw)) is not None,
            "header declares the default namespace jabber:client")
    st = f.find(q(NS_TLS, "starttls"))
    R.check(st is not None and st.find(q(NS_TLS, "required")) is not None,
            "features: <starttls><required/></starttls>")
    R.check(f.find(q(NS_SASL, "mechanisms")) is None, "no SASL mechanisms offered before TLS")
    # Auth before TLS is refused.
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXB3</auth>")
    fail = c.expect(q(NS_SASL, "failure"))
    R.check(fail.find(q(NS_SASL, "encryption-required")) is not None,
            "auth before TLS -> <failure><encryption-required/>")
    # Registration before TLS is refused too.
    r = c.iq("get", "<query xmlns='jabber:iq:register'/>")
    R.check(r.get("type") == "error" and error_condition(r) == "not-acceptable",
            "registration before TLS -> not-acceptable (%s)" % error_condition(r))
    # Then STARTTLS on the same connection.
    f2 = c.starttls()
    R.check(c.header.get("from") == DOMAIN and c.header.get("version") == "1.0"
            and c.header.get("id") != h.get("id"), "new stream header after TLS with a new id")
    mechs = c.mechanisms()
    R.check({"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"} <= set(mechs),
            "after TLS: SCRAM-SHA-256, SCRAM-SHA-1, PLAIN offered (%s)" % mechs)
    R.check(f2.find(q(NS_TLS, "starttls")) is None, "no starttls offered again after TLS")
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    R.check(c.stream_error() == "policy-violation", "second STARTTLS -> policy-violation")
    R.check(c.wait_closed(), "connection closed after the stream error")

    # Wrong stream namespace / host.
    c = Conn(k.port)
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='other.example' version='1.0'>")
    R.check(c.stream_error() == "host-unknown", "to='other.example' -> host-unknown")
    R.check(c.header is not None and c.header.get("from") == DOMAIN,
            "a header is sent before the stream error")
    R.check(c.wait_closed(), "closed after host-unknown")

    # Stanzas before authentication are not served.
    c = Conn(k.port)
    c.open_stream()
    c.send("<message to='alice@localhost'><body>x</body></message>")
    R.check(c.stream_error() == "not-authorized", "message before auth -> not-authorized stream error")
    c.close()


@section
def logins(k):
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
        c = Conn(k.port)
        c.open_stream()
        c.starttls()
        f = c.authenticate("alice", PW["alice"], mech)
        R.check(f.find(q(NS_BIND, "bind")) is not None, "%s login; bind offered" % mech)
        R.check(f.find(q(NS_SASL, "mechanisms")) is None, "no mechanisms after auth (%s)" % mech)
        c.close()
    # Non-ASCII password through SCRAM (SASLprep) and PLAIN.
    for mech in ("SCRAM-SHA-256", "PLAIN"):
        c = Conn(k.port)
        c.open_stream()
        c.starttls()
        c.authenticate("bob", PW["bob"], mech)
        R.check(True, "non-ASCII password works with %s" % mech)
        c.close()
    # Wrong passwords.
    for mech in ("SCRAM-SHA-256", "PLAIN"):
        c = Conn(k.port)
        c.open_stream()
        c.starttls()
        if mech == "PLAIN":
            el = c.sasl_plain("wrong", "not-the-password")
        else:
            el = c.sasl_scram("wrong", "not-the-password")
        R.check(el.tag == q(NS_SASL, "failure") and el.find(q(NS_SASL, "not-authorized")) is not None,
                "wrong password (%s) -> <failure><not-authorized/>" % mech)
        # the same stream may retry with the right password
        el = c.sasl_scram("wrong", PW["wrong"])
        R.check(el.tag == q(NS_SASL, "success"), "retry on the same stream succeeds (%s)" % mech)
        c.close()
    # Unknown user looks the same as a wrong password.
    c = Conn(k.port)
    c.open_stream()
    c.starttls()
    el = c.sasl_scram("nosuchuser", "x")
    R.check(el.find(q(NS_SASL, "not-authorized")) is not None, "unknown user -> not-authorized")
    el = c.sasl_plain("nosuchuser", "x")
    R.check(el.find(q(NS_SASL, "not-authorized")) is not None, "unknown user PLAIN -> not-authorized")
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>")
    el = c.expect(q(NS_SASL, "failure"))
    R.check(el.find(q(NS_SASL, "invalid-mechanism")) is not None, "DIGEST-MD5 -> invalid-mechanism")
    c.close()
    # Direct TLS (XEP-0368).
    c = Conn(k.tls_port, direct_tls=True)
    f = c.open_stream()
    R.check(f.find(q(NS_TLS, "starttls")) is None and "SCRAM-SHA-256" in c.mechanisms(),
            "direct TLS: no starttls, mechanisms offered")
    c.authenticate("alice", PW["alice"])
    c.bind("direct")
    R.check(c.jid == "alice@localhost/direct", "direct TLS login and bind (%s)" % c.jid)
    c.close()


@section
def binding(k):
    c = login(k.port, "alice", PW["alice"], resource="phone")
    R.check(c.jid == "alice@localhost/phone", "bind chosen resource -> alice@localhost/phone")
    c2 = login(k.port, "alice", PW["alice"], resource=None)
    m = re.fullmatch(r"alice@localhost/(.+)", c2.jid or "")
    R.check(m is not None and m.group(1) != "phone", "server-chosen resource (%s)" % c2.jid)
    # The same full JID again: the old session gets <conflict/>.
    c3 = login(k.port, "alice", PW["alice"], resource="phone")
    R.check(c3.jid == "alice@localhost/phone", "second login with the same full JID binds")
    R.check(c.stream_error() == "conflict", "old session gets <conflict/> stream error")
    R.check(c.wait_closed(), "old session closed")
    r = c3.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)
    R.check(iq_ok(r), "new session works")
    # session (RFC 3921) iq is answered
    r = c3.iq("set", "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>")
    R.check(iq_ok(r), "session iq answered with a result (%s)" % tostr(r))
    # a second bind is not allowed
    iid = "bind2"
    c3.send("<iq type='set' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<resource>other</resource></bind></iq>" % iid)
    r = c3.expect(q(NS_CLIENT, "iq"), id=iid)
    R.check(r.get("type") == "error", "a second bind on a bound stream is an error")
    c2.close()
    c3.close()


@section
def basic_iqs(k):
    c = login(k.port, "alice", PW["alice"], resource="iqs")
    r = c.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)
    R.check(iq_ok(r) and r.get("from") == DOMAIN and r.get("to") == c.jid and len(r) == 0,
            "XEP-0199 ping to server -> empty result from localhost (%s)" % tostr(r))
    r = c.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
    R.check(iq_ok(r), "ping without 'to' -> result")
    r = c.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=DOMAIN)
    qq = r.find(q(NS_DISCO_INFO, "query"))
    ids = [(i.get("category"), i.get("type")) for i in qq.findall(q(NS_DISCO_INFO, "identity"))] \
        if qq is not None else []
    feats = {f.get("var") for f in qq.findall(q(NS_DISCO_INFO, "feature"))} if qq is not None else set()
    R.check(iq_ok(r) and ("server", "im") in ids, "disco#info: identity server/im (%s)" % ids)
    R.check({NS_DISCO_INFO, NS_PING, NS_VERSION, NS_VCARD, NS_ROSTER, NS_REGISTER} <= feats,
            "disco#info features include disco#info, ping, version, vcard, roster, register")
    r = c.iq("get", "<query xmlns='jabber:iq:version'/>", to=DOMAIN)
    qq = r.find(q(NS_VERSION, "query"))
    R.check(iq_ok(r) and qq is not None and qq.findtext(q(NS_VERSION, "name")) == "kabard"
            and bool(qq.findtext(q(NS_VERSION, "version"))), "version: kabard + a version")
    r = c.iq("get", "<query xmlns='jabber:iq:last'/>", to=DOMAIN)
    qq = r.find(q(NS_LAST, "query"))
    R.check(iq_ok(r) and qq is not None and re.fullmatch(r"\d+", qq.get("seconds") or "") is not None,
            "last activity of the server: seconds='%s'" % (qq.get("seconds") if qq is not None else None))
    # an unknown namespace -> service-unavailable; two payloads -> bad-request
    r = c.iq("get", "<query xmlns='urn:example:nothing'/>", to=DOMAIN)
    R.check(r.get("type") == "error" and error_condition(r) == "service-unavailable",
            "unknown iq namespace -> service-unavailable")
    r = c.iq("get", "<ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)
    R.check(r.get("type") == "error" and error_condition(r) == "bad-request",
            "iq with two payloads -> bad-request")
    r = c.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="someone@remote.example")
    R.check(r.get("type") == "error" and error_condition(r) == "remote-server-not-found",
            "iq to a remote domain -> remote-server-not-found")
    # vcard set/get
    vcard = ("<vCard xmlns='vcard-temp'><FN>Alice Äpfel &amp; Co</FN><NICKNAME>al</NICKNAME>"
             "</vCard>")
    r = c.iq("set", vcard)
    R.check(iq_ok(r), "vcard set -> result")
    r = c.iq("get", "<vCard xmlns='vcard-temp'/>")
    v = r.find(q(NS_VCARD, "vCard"))
    R.check(iq_ok(r) and v is not None and v.findtext(q(NS_VCARD, "FN")) == "Alice Äpfel & Co"
            and v.findtext(q(NS_VCARD, "NICKNAME")) == "al", "vcard get returns what was set")
    b = login(k.port, "bob", PW["bob"], resource="vc")
    r = b.iq("get", "<vCard xmlns='vcard-temp'/>", to="alice@localhost")
    v = r.find(q(NS_VCARD, "vCard"))
    R.check(iq_ok(r) and v is not None and v.findtext(q(NS_VCARD, "FN")) == "Alice Äpfel & Co",
            "another account reads alice's vcard")
    r = b.iq("set", "<vCard xmlns='vcard-temp'><FN>evil</FN></vCard>", to="alice@localhost")
    R.check(r.get("type") == "error" and error_condition(r) == "forbidden",
            "setting another's vcard -> forbidden")
    r = b.iq("get", "<vCard xmlns='vcard-temp'/>")
    v = r.find(q(NS_VCARD, "vCard"))
    R.check(iq_ok(r) and v is not None and len(v) == 0, "no vcard yet -> empty <vCard/>")
    b.close()
    c.close()


@section
def messages(k):
    a = online(k.port, "alice", PW["alice"], resource="m")
    b = online(k.port, "bob", PW["bob"], resource="m")
    a.drain(0.2)
    b.drain(0.2)
    a.message("bob@localhost/m", "hello <bob> & co", id_="m1")
    m = b.expect_message("hello <bob> & co")
    R.check(m.get("from") == "alice@localhost/m" and m.get("to") == "bob@localhost/m"
            and m.get("id") == "m1" and m.get("type") == "chat",
            "message to a full JID relayed with from stamped (%s)" % tostr(m))
    a.message("bob@localhost", "to bare")
    m = b.expect_message("to bare")
    R.check(m.get("from") == "alice@localhost/m", "message to the bare JID delivered")
    # a spoofed 'from' is overwritten
    a.send("<message to='bob@localhost' from='carol@localhost/x' type='chat'><body>spoof</body></message>")
    m = b.expect_message("spoof")
    R.check(m.get("from") == "alice@localhost/m", "spoofed from is replaced by the real JID")
    a.message("nobody@localhost", "anyone?", id_="m2")
    e = a.expect_message(type="error", id="m2")
    R.check(error_condition(e) == "service-unavailable" and e.get("from") == "nobody@localhost",
            "message to unknown account -> <service-unavailable/> (%s)" % tostr(e))
    a.message("someone@remote.example", "far away", id_="m3")
    e = a.expect_message(type="error", id="m3")
    R.check(error_condition(e) == "remote-server-not-found",
            "message to remote domain -> <remote-server-not-found/> (%s)" % error_condition(e))
    a.send("<message to='bad@@jid' id='m4'><body>x</body></message>")
    e = a.expect_message(type="error", id="m4")
    R.check(error_condition(e) == "jid-malformed", "malformed 'to' -> jid-malformed")
    a.close()
    b.close()


@section
def forwarded_as_received(k):
    """A message to an online contact goes out as its sender wrote it, with only 'from' put in:
    quoting, character references, CDATA and namespace prefixes declared inside it survive, also
    when it arrives in pieces. One that relies on a prefix declared on the sender's stream header,
    or that carries its own 'from', is rebuilt instead, and must arrive just as correct."""
    c = Conn(k.port)
    c.open_stream()
    c.starttls()
    el = c.sasl_scram("alice", PW["alice"])
    R.check(el.tag == q(NS_SASL, "success"), "forwarding: authenticated")
    c.open_stream(extra=" xmlns:x='urn:example:x'")
    c.bind("fw")
    c.iq("get", "<query xmlns='jabber:iq:roster'/>")
    c.presence()
    b = online(k.port, "bob", PW["bob"], resource="fw")
    c.drain(0.2)
    b.drain(0.2)
    sent = ("<message to=\"bob@localhost/fw\" type='chat' id='fw1' xml:lang='de'><body>caf&#233; "
            "&amp; &lt;tea&gt; <![CDATA[<raw> & ]]>\r\nend</body>"
            "<y:note xmlns:y='urn:example:y' y:kind=\"a'b\">n</y:note></message>")
    c.send(sent)
    m = b.expect_message("caf\u00e9 & <tea> <raw> & \nend")
    R.check(m.get("from") == "alice@localhost/fw" and m.get(XML_LANG) == "de",
            "forwarded: text, CDATA and entities decoded right, from stamped (%s)" % tostr(m))
    # Byte for byte, with 'from' put in and, before the end tag, the stanza-id of bob's archive
    # (XEP-0313 §3.4; the message is archived).
    head = sent.replace("<message ", "<message from='alice@localhost/fw' ", 1)[:-len("</message>")]
    want = re.compile(re.escape(head.encode()) + rb"<stanza-id xmlns='urn:xmpp:sid:0' "
                      rb"by='bob@localhost' id='[0-9a-f]{28}'/></message>")
    R.check(want.search(bytes(b.raw)) is not None,
            "forwarded byte for byte with from and the archive's stanza-id put in")
    note = m.find("{urn:example:y}note")
    R.check(note is not None and note.get("{urn:example:y}kind") == "a'b",
            "a prefix declared inside the message resolves at the recipient")
    # In pieces, with pauses: each piece is a read of its own.
    parts = [sent[:7], sent[7:60].replace("fw1", "fw2"), sent[60:]]
    for part in parts:
        c.send(part)
        time.sleep(0.15)
    m = b.expect_message("caf\u00e9 & <tea> <raw> & \nend", id="fw2")
    R.check(m.get("from") == "alice@localhost/fw", "a message arriving in three reads forwarded")
    # A prefix from the sender's stream header: the bytes alone would not parse.
    c.send("<message to='bob@localhost/fw' id='fw3'><body>with x</body><x:tag a='1'/></message>")
    m = b.expect_message("with x")
    R.check(m.find("{urn:example:x}tag") is not None and m.get("from") == "alice@localhost/fw",
            "a child using a prefix of the sender's stream header arrives in its namespace (%s)"
            % tostr(m))
    # Its own 'from' is replaced.
    c.send("<message from='mallory@localhost/x' to='bob@localhost/fw' id='fw4'>"
           "<body>own from</body></message>")
    m = b.expect_message("own from")
    R.check(m.get("from") == "alice@localhost/fw", "a message's own from replaced (%s)" % tostr(m))
    c.close()
    b.close()


@section
def idle_streams(k):
    """An idle stream gives its XML parser back (after ~2 s) and must carry on exactly as before:
    prefixes declared on the stream header still resolve, a stanza split across the idle time
    still parses, and the closing tag still matches the stream root."""
    c = Conn(k.port)
    c.open_stream()
    c.starttls()
    el = c.sasl_scram("alice", PW["alice"])
    R.check(el.tag == q(NS_SASL, "success"), "idle: authenticated")
    c.open_stream(extra=" xmlns:p='urn:xmpp:ping'")
    c.bind("idle")
    time.sleep(3.5)
    r = c.iq("get", "<p:ping/>", to="localhost")
    R.check(r.get("type") == "result",
            "after 3.5 s idle, a prefix declared on the stream header resolves (%s)" % tostr(r))
    time.sleep(3.5)
    c.send("<iq type='get' id='split' to='localhost'><p:pi")
    time.sleep(3.5)
    c.send("ng/></iq>")
    r = c.expect(q(NS_CLIENT, "iq"), id="split")
    R.check(r.get("type") == "result", "a stanza split across 3.5 s of silence parses (%s)" % tostr(r))
    time.sleep(3.5)
    c.send("</stream:stream>")
    closed = c.wait_closed(timeout=5)
    errors = [tostr(e) for e in c.queue if e.tag == q(NS_STREAM, "error")]
    R.check(closed and not errors,
            "after idling, </stream:stream> closes the stream cleanly (errors: %s)" % errors)


@section
def roster(k):
    c = login(k.port, "carol", PW["carol"], resource="r")
    r = c.iq("get", "<query xmlns='jabber:iq:roster' ver=''/>")
    qq = r.find(q(NS_ROSTER, "query"))
    R.check(iq_ok(r) and qq is not None and qq.get("ver") is not None and len(qq) == 0,
            "roster get (empty) with ver")
    ver0 = qq.get("ver") if qq is not None else None
    c2 = login(k.port, "carol", PW["carol"], resource="r2")
    c2.iq("get", "<query xmlns='jabber:iq:roster'/>")
    r = c.iq("set", "<query xmlns='jabber:iq:roster'><item jid='dave@localhost' name='Dave'>"
                    "<group>Friends</group><group>Work</group></item></query>")
    R.check(iq_ok(r), "roster set -> result")
    for conn, label in ((c, "setting"), (c2, "other")):
        item, ver1, _ = expect_push(conn, "dave@localhost")
        R.check(item.get("name") == "Dave" and item.get("subscription") == "none"
                and sorted(g.text for g in item.findall(q(NS_ROSTER, "group"))) == ["Friends", "Work"]
                and ver1 is not None and ver1 != ver0,
                "roster push to the %s resource with name, groups, subscription none, new ver" % label)
    r = c.iq("get", "<query xmlns='jabber:iq:roster' ver='%s'/>" % ver0)
    qq = r.find(q(NS_ROSTER, "query"))
    items = roster_items(qq) if qq is not None else {}
    R.check(iq_ok(r) and "dave@localhost" in items and qq.get("ver") == ver1,
            "roster get with an old ver returns the roster and the new ver")
    r = c.iq("get", "<query xmlns='jabber:iq:roster' ver='%s'/>" % ver1)
    R.check(iq_ok(r) and len(r) == 0, "roster get with the current ver -> empty result")
    # update
    r = c.iq("set", "<query xmlns='jabber:iq:roster'><item jid='dave@localhost' name='D.'/></query>")
    item, ver2, _ = expect_push(c, "dave@localhost")
    R.check(iq_ok(r) and item.get("name") == "D." and ver2 != ver1, "roster update pushed")
    item, _, _ = expect_push(c2, "dave@localhost")
    R.check(item.get("name") == "D.", "roster update pushed to the other resource")
    # bad sets
    r = c.iq("set", "<query xmlns='jabber:iq:roster'><item jid='x@localhost'/><item jid='y@localhost'/></query>")
    R.check(r.get("type") == "error" and error_condition(r) == "bad-request", "two items -> bad-request")
    r = c.iq("set", "<query xmlns='jabber:iq:roster'><item jid='x@localhost'><group>g</group>"
                    "<group>g</group></item></query>")
    R.check(r.get("type") == "error" and error_condition(r) == "bad-request", "duplicate group -> bad-request")
    r = c.iq("get", "<query xmlns='jabber:iq:roster'/>", to="alice@localhost")
    R.check(r.get("type") == "error" and error_condition(r) == "forbidden", "another's roster -> forbidden")
    # remove
    r = c.iq("set", "<query xmlns='jabber:iq:roster'><item jid='dave@localhost' subscription='remove'/></query>")
    R.check(iq_ok(r), "roster remove -> result")
    for conn, label in ((c, "setting"), (c2, "other")):
        item, ver3, _ = expect_push(conn, "dave@localhost")
        R.check(item.get("subscription") == "remove" and ver3 not in (ver1, ver2),
                "remove push (subscription='remove') to the %s resource" % label)
    r = c.iq("get", "<query xmlns='jabber:iq:roster'/>")
    qq = r.find(q(NS_ROSTER, "query"))
    R.check(qq is not None and len(qq) == 0, "roster empty after remove")
    r = c.iq("set", "<query xmlns='jabber:iq:roster'><item jid='dave@localhost' subscription='remove'/></query>")
    R.check(r.get("type") == "error" and error_condition(r) == "item-not-found",
            "removing a missing item -> item-not-found")
    c.close()
    c2.close()


@section
def subscriptions_and_presence(k):
    a = online(k.port, "frank", PW["frank"], resource="f")
    b = online(k.port, "gina", PW["gina"], resource="g")
    a.drain(0.2)
    b.drain(0.2)
    # frank subscribes to gina
    a.send("<presence to='gina@localhost' type='subscribe'/>")
    item, _, _ = expect_push(a, "gina@localhost", ask="subscribe")
    R.check(item.get("subscription") == "none", "subscriber's push: subscription none, ask subscribe")
    p = b.expect_presence(type="subscribe")
    R.check(p.get("from") == "frank@localhost", "contact receives subscribe from the bare JID (%s)" % tostr(p))
    # gina approves
    b.send("<presence to='frank@localhost' type='subscribed'/>")
    item, _, _ = expect_push(b, "frank@localhost", subscription="from")
    R.check(item.get("ask") is None, "approver's push: subscription from (%s)" % tostr(item))
    item, _, _ = expect_push(a, "gina@localhost", subscription="to")
    R.check(item.get("ask") is None, "subscriber's push: subscription to (%s)" % tostr(item))
    p = a.expect_presence(type="subscribed")
    R.check(p.get("from") == "gina@localhost", "subscriber receives subscribed")
    p = a.expect_presence(**{"from": "gina@localhost/g"})
    R.check(p.get("type") is None, "subscriber receives the contact's available presence")
    # and back: gina subscribes to frank
    b.send("<presence to='frank@localhost' type='subscribe'/>")
    item, _, _ = expect_push(b, "frank@localhost", ask="subscribe")
    R.check(item.get("subscription") == "from", "gina: from + ask")
    a.expect_presence(type="subscribe", **{"from": "gina@localhost"})
    a.send("<presence to='gina@localhost' type='subscribed'/>")
    item, _, _ = expect_push(a, "gina@localhost", subscription="both")
    R.check(item.get("ask") is None, "frank's push: both")
    item, _, _ = expect_push(b, "frank@localhost", subscription="both")
    R.check(item.get("ask") is None, "gina's push: both")
    p = b.expect_presence(**{"from": "frank@localhost/f"})
    R.check(p.get("type") is None, "gina receives frank's presence after approving")
    a.drain(0.2)
    b.drain(0.2)
    # presence broadcast
    b.send("<presence><show>away</show><status>lunch</status></presence>")
    p = a.expect_presence(**{"from": "gina@localhost/g"})
    R.check(p.findtext(q(NS_CLIENT, "show")) == "away" and p.findtext(q(NS_CLIENT, "status")) == "lunch",
            "presence update broadcast to the subscriber")
    R.check(p.get("to") == "frank@localhost",
            "broadcast presence is addressed to the subscriber's bare JID (%s)" % tostr(p))
    # a second resource of gina comes online: frank sees it, and the new resource gets frank's
    b2 = online(k.port, "gina", PW["gina"], resource="g2")
    p = a.expect_presence(**{"from": "gina@localhost/g2"})
    R.check(p.get("type") is None, "initial presence broadcast to contacts")
    p = b2.expect_presence(**{"from": "frank@localhost/f"})
    R.check(p.get("type") is None, "new resource receives contacts' presence (probe)")
    p = b2.expect_presence(**{"from": "gina@localhost/g"})
    R.check(p.findtext(q(NS_CLIENT, "show")) == "away", "new resource receives own other resource's presence")
    p = b.expect_presence(**{"from": "gina@localhost/g2"})
    R.check(p.get("to") == "gina@localhost/g",
            "other resource receives the new resource's presence, to its full JID (%s)" % tostr(p))
    # graceful close -> unavailable
    b2.close()
    p = a.expect_presence(**{"from": "gina@localhost/g2"})
    R.check(p.get("type") == "unavailable", "unavailable on disconnect")
    p = b.expect_presence(**{"from": "gina@localhost/g2"})
    R.check(p.get("type") == "unavailable", "own other resource gets unavailable too")
    # abrupt close -> unavailable
    b.abort()
    p = a.expect_presence(timeout=10, **{"from": "gina@localhost/g"})
    R.check(p.get("type") == "unavailable", "unavailable after an abrupt socket close")
    # explicit unavailable
    b = online(k.port, "gina", PW["gina"], resource="g3")
    a.expect_presence(**{"from": "gina@localhost/g3"})
    b.send("<presence type='unavailable'><status>bye</status></presence>")
    p = a.expect_presence(**{"from": "gina@localhost/g3"})
    R.check(p.get("type") == "unavailable" and p.findtext(q(NS_CLIENT, "status")) == "bye",
            "explicit unavailable presence broadcast with status")
    b.close()
    a.close()


@section
def directed_presence(k):
    """RFC 6121 §4.6: whoever got a resource's directed presence learns when it goes, also when
    the resource never announced itself for broadcast (a bot, a file transfer's sender)."""
    a = online(k.port, "erin", PW["erin"], resource="watch")
    a.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
    a.queue.clear()
    for how in ("close", "abort", "unavailable"):
        b = login(k.port, "dave", PW["dave"], resource="d-" + how)  # no broadcast presence
        b.presence(to="erin@localhost/watch")
        p = a.expect_presence(**{"from": "dave@localhost/d-" + how})
        R.check(p.get("type") is None, "directed presence arrives (%s)" % how)
        if how == "close":
            b.close()
        elif how == "abort":
            b.abort()
        else:
            b.presence(to="erin@localhost/watch", type="unavailable")
        p = a.expect_presence(timeout=10, **{"from": "dave@localhost/d-" + how})
        R.check(p.get("type") == "unavailable",
                "then unavailable, after %s, from a resource never available for broadcast (%s)"
                % ({"close": "a clean close", "abort": "an abrupt close",
                    "unavailable": "a directed unavailable"}[how], tostr(p)))
        if how == "unavailable":
            b.close()  # nothing more: the target was told already
            a.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
            extra = [e for e in a.queue if e.get("from") == "dave@localhost/d-unavailable"]
            R.check(not extra, "and only once (%s)" % [tostr(e) for e in extra])
    a.close()


@section
def offline_messages(k):
    a = login(k.port, "alice", PW["alice"], resource="off")
    for i in range(1, 4):
        a.message("dave@localhost", "offline %d" % i, id_="o%d" % i)
    a.send("<iq type='get' id='sync1'><ping xmlns='urn:xmpp:ping'/></iq>")
    a.expect(q(NS_CLIENT, "iq"), id="sync1")
    errs = [e for e in a.drain(0.3) if e.get("type") == "error"]
    R.check(not errs, "three messages to an offline account stored without error")
    d = login(k.port, "dave", PW["dave"], resource="d")
    before = [e for e in d.drain(0.5) if e.tag == q(NS_CLIENT, "message")]
    R.check(not before, "nothing delivered before initial presence")
    d.presence()
    got = [d.expect_message() for _ in range(3)]
    bodies = [m.findtext(q(NS_CLIENT, "body")) for m in got]
    R.check(bodies == ["offline 1", "offline 2", "offline 3"],
            "offline messages delivered in order after initial presence (%s)" % bodies)
    stamps = []
    for m in got:
        dl = m.find(q(NS_DELAY, "delay"))
        stamps.append(dl.get("stamp") if dl is not None else None)
    R.check(all(s and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", s) for s in stamps),
            "each has a XEP-0203 delay stamp (%s)" % stamps)
    R.check(all(m.find(q(NS_DELAY, "delay")).get("from") == DOMAIN for m in got if m.find(q(NS_DELAY, "delay")) is not None),
            "delay from='localhost'")
    R.check(got[0].get("from") == "alice@localhost/off", "stored message keeps the sender's full JID")
    time.sleep(0.5)  # deletion happens once written
    d.close()
    d = login(k.port, "dave", PW["dave"], resource="d2")
    d.presence()
    again = [e for e in d.drain(1.0) if e.tag == q(NS_CLIENT, "message")]
    R.check(not again, "second login gets no offline messages (%d)" % len(again))
    d.close()
    # limit: offline_messages = 3
    for i in range(1, 5):
        a.message("erin@localhost", "lim %d" % i, id_="l%d" % i)
    e = a.expect_message(type="error", id="l4")
    err = e.find(q(NS_CLIENT, "error"))
    R.check(error_condition(e) == "resource-constraint" and err is not None
            and err.get("type") == "wait",
            "4th offline message -> <resource-constraint/>, type wait (RFC 6120 §8.3.3.18)")
    errs = [x.get("id") for x in a.drain(0.3) if x.get("type") == "error"]
    R.check(not errs, "the first three were accepted (%s)" % errs)
    er = login(k.port, "erin", PW["erin"], resource="e")
    er.presence()
    got = [er.expect_message() for _ in range(3)]
    R.check([m.findtext(q(NS_CLIENT, "body")) for m in got] == ["lim 1", "lim 2", "lim 3"],
            "the three stored ones are delivered")
    extra = [x for x in er.drain(0.5) if x.tag == q(NS_CLIENT, "message")]
    R.check(not extra, "the 4th was not stored")
    er.close()
    a.close()


@section
def registration(k):
    c = Conn(k.port)
    c.open_stream()
    f = c.starttls()
    R.check(f.find("{http://jabber.org/features/iq-register}register") is not None,
            "register stream feature offered")
    r = c.iq("get", "<query xmlns='jabber:iq:register'/>")
    qq = r.find(q(NS_REGISTER, "query"))
    R.check(iq_ok(r) and qq is not None and qq.find(q(NS_REGISTER, "username")) is not None
            and qq.find(q(NS_REGISTER, "password")) is not None, "registration form has username and password")
    r = c.iq("set", "<query xmlns='jabber:iq:register'><username>newbie</username>"
                    "<password>pw-one</password></query>")
    R.check(iq_ok(r), "register newbie -> result (%s)" % tostr(r))
    r = c.iq("set", "<query xmlns='jabber:iq:register'><username>newbie</username>"
                    "<password>other</password></query>")
    R.check(r.get("type") == "error" and error_condition(r) == "conflict", "registering it again -> conflict")
    r = c.iq("set", "<query xmlns='jabber:iq:register'><username>alice</username>"
                    "<password>other</password></query>")
    R.check(r.get("type") == "error" and error_condition(r) == "conflict", "a taken name (alice) -> conflict")
    r = c.iq("set", "<query xmlns='jabber:iq:register'><username>nopass</username></query>")
    R.check(r.get("type") == "error" and error_condition(r) == "not-acceptable", "missing password -> not-acceptable")
    c.close()
    ok = k.ctl("user", "list", check=False)
    R.check("newbie" in ok.stdout, "kabarctl lists the registered account")
    n = login(k.port, "newbie", "pw-one", resource="n")
    R.check(n.jid == "newbie@localhost/n", "login with the registered password")
    r = n.iq("get", "<query xmlns='jabber:iq:register'/>")
    qq = r.find(q(NS_REGISTER, "query"))
    R.check(iq_ok(r) and qq is not None and qq.find(q(NS_REGISTER, "registered")) is not None,
            "registered account sees <registered/>")
    r = n.iq("set", "<query xmlns='jabber:iq:register'><username>alice</username>"
                    "<password>x</password></query>")
    R.check(r.get("type") == "error", "changing another account's password is refused")
    r = n.iq("set", "<query xmlns='jabber:iq:register'><username>newbie</username>"
                    "<password>pw-two</password></query>")
    R.check(iq_ok(r), "password change -> result")
    n.close()
    c = Conn(k.port)
    c.open_stream()
    c.starttls()
    el = c.sasl_scram("newbie", "pw-one")
    R.check(el.find(q(NS_SASL, "not-authorized")) is not None, "old password refused after change")
    el = c.sasl_scram("newbie", "pw-two")
    R.check(el.tag == q(NS_SASL, "success"), "new password works (SCRAM-SHA-256)")
    c.close()
    n = login(k.port, "newbie", "pw-two", resource="n", mech="SCRAM-SHA-1")
    R.check(True, "new password works (SCRAM-SHA-1)")
    n2 = login(k.port, "newbie", "pw-two", resource="n2", mech="PLAIN")
    r = n.iq("set", "<query xmlns='jabber:iq:register'><remove/></query>")
    R.check(iq_ok(r), "account removal -> result")
    R.check(n.stream_error() == "not-authorized", "the removing session's stream ends")
    R.check(n2.stream_error() == "not-authorized", "the account's other session ends too")
    c = Conn(k.port)
    c.open_stream()
    c.starttls()
    el = c.sasl_plain("newbie", "pw-two")
    R.check(el.find(q(NS_SASL, "not-authorized")) is not None, "removed account cannot log in")
    c.close()
    # the name is free again
    c = Conn(k.tls_port, direct_tls=True)
    c.open_stream()
    r = c.iq("set", "<query xmlns='jabber:iq:register'><username>newbie</username>"
                    "<password>pw-three</password></query>")
    R.check(iq_ok(r), "a removed name can be registered again (over direct TLS)")
    c.close()


def shutdown(k):
    print("== shutdown", flush=True)
    c = login(k.port, "alice", PW["alice"], resource="last")
    t0 = time.monotonic()
    k.proc.send_signal(15)
    try:
        cond = c.stream_error(timeout=5)
    except XmppError as e:
        cond = str(e)
    R.check(cond == "system-shutdown", "connected client gets <system-shutdown/> (%s)" % cond)
    try:
        rc = k.proc.wait(timeout=15)
    except Exception:  # noqa: BLE001
        rc = None
    R.check(rc == 0, "kabard exits 0 on SIGTERM (rc=%s, %.1fs)" % (rc, time.monotonic() - t0))


def main():
    args = kabartest.parse_args()
    k = kabartest.Kabard(args, config="[limits]\noffline_messages = 3\n")
    sections = (stream_header, logins, binding, basic_iqs, messages, forwarded_as_received,
                idle_streams, roster, subscriptions_and_presence, directed_presence,
                offline_messages, registration)
    R.run_sections(k, PW, sections, after=shutdown)


if __name__ == "__main__":
    main()
