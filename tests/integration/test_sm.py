"""Stream management (XEP-0198) against the real kabard, in raw XML: the feature after
authentication, <enable/> (with and without resumption, before bind, twice), counting both ways
(<r/>/<a/>, the server's own <r/>, an 'h' too high), resumption after a reset connection (every
unacknowledged stanza again, in order; an unknown or another account's id fails), and what
happens to unacknowledged stanzas when the session ends for good: the window expires (messages
stored offline, an IQ answered with an error, <failed h/> for the old id), a new session binds the
same resource, and kabard stops (SIGTERM) with a session detached."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import (NS_CLIENT, NS_STREAM, Conn, login, online, q, tostr)  # noqa: E402

NS_SM = "urn:xmpp:sm:3"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS = {q(NS_CLIENT, n) for n in ("message", "presence", "iq")}

R = kabartest.Results("sm")
PW = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


class SmClient:
    """A raw connection that counts the stanzas it has received since <enabled/> (its 'h') and
    answers the server's <r/> with it."""

    def __init__(self, conn):
        self.c = conn
        self.h = 0
        self.counting = False
        self.requests = 0

    def enable(self, resume=True):
        self.c.send("<enable xmlns='%s'%s/>" % (NS_SM, " resume='true'" if resume else ""))
        el = self.c.wait_for(lambda e: e.tag in (q(NS_SM, "enabled"), q(NS_SM, "failed")),
                             what="enabled/failed")
        if el.tag == q(NS_SM, "enabled"):
            self.counting = True
        return el

    def next(self, pred, timeout=None, what="element"):
        """The next element matching pred; stanzas before it are counted (and consumed when they
        do not match), <r/> answered."""
        while True:
            el = self.c.wait_for(lambda e: True, timeout, what=what)
            if el.tag in STANZAS and self.counting:
                self.h += 1
            if el.tag == q(NS_SM, "r") and not pred(el):
                self.requests += 1
                self.c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.h))
                continue
            if pred(el):
                return el

    def message(self, body, timeout=None):
        return self.next(lambda e: e.tag == q(NS_CLIENT, "message") and
                         e.findtext(q(NS_CLIENT, "body")) == body, timeout, "message %r" % body)

    def ack_roundtrip(self):
        """Sends our ack and an <r/>; returns the server's <a/> (processed in order)."""
        self.c.send("<a xmlns='%s' h='%d'/><r xmlns='%s'/>" % (NS_SM, self.h, NS_SM))
        return self.next(lambda e: e.tag == q(NS_SM, "a"), what="<a/>")


def authenticated(port, user):
    c = Conn(port)
    c.open_stream()
    c.starttls()
    c.authenticate(user, PW[user])
    return c


def subscribe(a, a_jid, b, b_jid):
    a.send("<presence to='%s' type='subscribe'/>" % b_jid)
    b.expect_presence(type="subscribe")
    b.send("<presence to='%s' type='subscribed'/>" % a_jid)
    a.expect_presence(type="subscribed")


def condition(el, ns=NS_STANZAS):
    for child in el:
        if child.tag.startswith("{%s}" % ns):
            return child.tag.split("}")[1]
    return None


@R.section
def negotiation(k):
    c = authenticated(k.port, "alice")
    R.check(c.features.find(q(NS_SM, "sm")) is not None,
            "<sm xmlns='urn:xmpp:sm:3'/> offered after authentication, beside bind")
    c.send("<enable xmlns='%s'/>" % NS_SM)
    el = c.wait_for(lambda e: e.tag == q(NS_SM, "failed"), what="failed")
    R.check(condition(el) == "unexpected-request", "<enable/> before bind: <failed><unexpected-request/>")
    c.bind("r1")
    s = SmClient(c)
    el = s.enable(resume=True)
    sm_id = el.get("id") or ""
    R.check(el.tag == q(NS_SM, "enabled") and el.get("resume") == "true" and
            re.fullmatch(r"[0-9a-f]{32,}", sm_id) is not None,
            "<enabled resume='true' id=(128 bits or more, hex)/>: %s" % tostr(el))
    R.check(el.get("max") == "300", "max='300' (the default window): %s" % el.get("max"))
    el = s.enable(resume=True)
    R.check(el.tag == q(NS_SM, "failed") and condition(el) == "unexpected-request",
            "a second <enable/>: <failed><unexpected-request/>")
    c.close()
    c2 = login(k.port, "bob", PW["bob"], "plain")
    el = SmClient(c2).enable(resume=False)
    R.check(el.tag == q(NS_SM, "enabled") and el.get("id") is None and el.get("resume") is None,
            "<enable/> without resume: <enabled/> with no id")
    c2.close()
    c3 = login(k.port, "bob", PW["bob"], "early")
    c3.send("<r xmlns='%s'/>" % NS_SM)
    R.check(c3.stream_error() == "unsupported-stanza-type",
            "<r/> without stream management: unsupported-stanza-type")
    c3.close(graceful=False)


@R.section
def counting(k):
    a = login(k.port, "alice", PW["alice"], "count")
    b = online(k.port, "bob", PW["bob"], "count")
    s = SmClient(a)
    s.enable(resume=False)
    el = s.ack_roundtrip()
    R.check(el.get("h") == "0", "h='0' before any stanza")
    a.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    a.message("bob@localhost/count", "to bob")
    a.send("<a xmlns='%s' h='%d'/>" % (NS_SM, s.h))   # a nonza: not counted
    a.presence()
    el = s.ack_roundtrip()
    R.check(el.get("h") == "3", "an IQ, a message, a presence: h='3' (nonzas not counted): %s"
            % el.get("h"))
    b.expect_message("to bob")
    # The server asks for acks itself, and our acks empty its queue.
    for i in range(12):
        b.message("alice@localhost/count", "m%d" % i)
    for i in range(12):
        s.message("m%d" % i)
    R.check(s.requests >= 2,
            "kabard asked for acks itself (<r/> every 5 stanzas): %d answered" % s.requests)
    # An 'h' higher than what was sent ends the stream (XEP-0198 §6).
    a.send("<a xmlns='%s' h='%d'/>" % (NS_SM, s.h + 10))
    err = a.expect(q(NS_STREAM, "error"))
    high = err.find(q(NS_SM, "handled-count-too-high"))
    R.check(err.find(q(NS_STREAMS, "undefined-condition")) is not None and high is not None and
            high.get("h") == str(s.h + 10) and high.get("send-count") == str(s.h),
            "h too high: undefined-condition with <handled-count-too-high h send-count/>: %s"
            % tostr(err))
    R.check(a.wait_closed(), "and the connection is closed")
    b.close()


@R.section
def resumption(k):
    a = login(k.port, "alice", PW["alice"], "res")
    s = SmClient(a)
    sm_id = s.enable(resume=True).get("id")
    a.presence()
    b = online(k.port, "bob", PW["bob"], "res")
    b.message("alice@localhost/res", "one")
    b.message("alice@localhost/res", "two")
    s.message("one")
    handled_one = s.h
    s.message("two")
    # Received "two" but the connection resets before the client handled it.
    a.abort()
    b.message("alice@localhost/res", "three")
    # Another account cannot take it over.
    m = authenticated(k.port, "carol")
    m.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, sm_id))
    el = m.wait_for(lambda e: e.tag == q(NS_SM, "failed"), what="failed")
    R.check(condition(el) == "item-not-found", "another account's id: <failed><item-not-found/>")
    m.close()
    u = authenticated(k.port, "alice")
    u.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, "f" * 32))
    el = u.wait_for(lambda e: e.tag == q(NS_SM, "failed"), what="failed")
    R.check(condition(el) == "item-not-found", "an unknown id: <failed><item-not-found/>")
    u.close()
    n = authenticated(k.port, "alice")
    n.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, sm_id, handled_one))
    el = n.wait_for(lambda e: e.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")), what="resumed")
    R.check(el.tag == q(NS_SM, "resumed") and el.get("previd") == sm_id and el.get("h") == "1",
            "<resumed previd h='1'/> (our presence was handled): %s" % tostr(el))
    s2 = SmClient(n)
    s2.counting = True
    s2.h = handled_one
    got = [s2.message("two").findtext(q(NS_CLIENT, "body")),
           s2.message("three").findtext(q(NS_CLIENT, "body"))]
    R.check(got == ["two", "three"], "the unacknowledged stanzas again, in order: %s" % got)
    extra = [e for e in n.drain(0.5) if e.tag == q(NS_CLIENT, "message")]
    R.check(not extra, "nothing twice: %s" % [tostr(e) for e in extra])
    R.check(not [e for e in b.drain(0.3) if e.tag == q(NS_CLIENT, "presence")
                 and e.get("from") == "alice@localhost/res"],
            "contacts saw no unavailable presence")
    b.message("alice@localhost/res", "four")
    R.check(s2.message("four") is not None, "the resumed session goes on")
    n.close()
    b.close()


@R.section
def replaced_while_detached(k):
    a = login(k.port, "alice", PW["alice"], "conf")
    s = SmClient(a)
    s.enable(resume=True)
    a.presence()
    b = online(k.port, "bob", PW["bob"], "conf")
    b.message("alice@localhost/conf", "before")
    a.abort()
    # RFC 6120 §7.7.2.2: a new session binding the same resource wins; what the old one had not
    # acknowledged is stored and comes with the new session's initial presence.
    a2 = online(k.port, "alice", PW["alice"], "conf")
    el = a2.expect_message("before")
    R.check(el is not None, "the replaced session's unacknowledged message reaches the new one")
    a2.close()
    b.close()


def expiry(args):
    k = kabartest.Kabard(args, config="[sm]\nresume_timeout = 1\n")
    with k:
        for user, pw in PW.items():
            k.add_user(user, pw)
        a = online(k.port, "alice", PW["alice"], "exp")
        b = online(k.port, "bob", PW["bob"], "exp")
        subscribe(a, "alice@localhost", b, "bob@localhost")
        subscribe(b, "bob@localhost", a, "alice@localhost")
        b.drain(0.3)
        s = SmClient(a)
        el = s.enable(resume=True)
        sm_id = el.get("id")
        R.check(el.get("max") == "1", "[sm] resume_timeout sets max: %s" % el.get("max"))
        a.drain(0.3)
        b.message("alice@localhost/exp", "e1")
        b.message("alice@localhost/exp", "e2")
        b.send("<iq type='get' id='v1' to='alice@localhost/exp'>"
               "<query xmlns='jabber:iq:version'/></iq>")
        s.next(lambda e: e.tag == q(NS_CLIENT, "iq"), what="the version request")
        a.abort()
        err = b.wait_for(lambda e: e.tag == q(NS_CLIENT, "iq") and e.get("id") == "v1",
                         timeout=15, what="the error for the IQ")
        R.check(err.get("type") == "error", "an unacknowledged IQ request is answered with an error")
        b.expect_presence(type="unavailable", timeout=15)
        R.check(True, "the window passed: contacts see the resource go unavailable")
        n = authenticated(k.port, "alice")
        n.send("<resume xmlns='%s' previd='%s' h='0'/>" % (NS_SM, sm_id))
        el = n.wait_for(lambda e: e.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")),
                        what="failed")
        R.check(el.tag == q(NS_SM, "failed") and condition(el) == "item-not-found" and
                el.get("h") is not None,
                "resuming an expired session: <failed h><item-not-found/>: %s" % tostr(el))
        n.bind("exp")
        n.presence()
        bodies = [n.expect_message(body).findtext(q(NS_CLIENT, "body")) for body in ("e1", "e2")]
        R.check(bodies == ["e1", "e2"], "its unacknowledged messages come from offline storage")
        n.close()
        b.close()


def shutdown(args):
    k = kabartest.Kabard(args)
    k.start()
    try:
        for user, pw in PW.items():
            k.add_user(user, pw)
        a = login(k.port, "alice", PW["alice"], "stop")
        s = SmClient(a)
        s.enable(resume=True)
        a.presence()
        b = online(k.port, "bob", PW["bob"], "stop")
        for i in range(3):
            b.message("alice@localhost/stop", "s%d" % i)
        for i in range(3):
            s.message("s%d" % i)
        a.abort()
        b.message("alice@localhost/stop", "s3")
        b.iq("get", "<ping xmlns='urn:xmpp:ping'/>")  # s3 is routed before this answer
        R.check(k.stop() == 0, "SIGTERM with a session detached: kabard exits 0")
        k.proc = None
        k.start()
        a2 = online(k.port, "alice", PW["alice"], "after")
        got = [e.findtext(q(NS_CLIENT, "body")) for e in a2.drain(1.0)
               if e.tag == q(NS_CLIENT, "message")]
        R.check(got == ["s0", "s1", "s2", "s3"],
                "every unacknowledged message of the detached session was stored: %s" % got)
        a2.close()
    finally:
        k.cleanup()


def main():
    args = kabartest.parse_args()
    with kabartest.Kabard(args) as k:
        for user, pw in PW.items():
            k.add_user(user, pw)
        negotiation(k)
        counting(k)
        resumption(k)
        replaced_while_detached(k)
    R.section(expiry)(args)
    R.section(shutdown)(args)
    R.finish()


if __name__ == "__main__":
    main()
