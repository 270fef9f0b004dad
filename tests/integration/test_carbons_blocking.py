"""Message carbons (XEP-0280) and the blocking command (XEP-0191) in raw XML against a real
kabard: copies sent and received, <private/>, errors, a forged carbon from another account,
block/unblock with pushes, the errors and the presence they cause, and a blocklist that outlives
a restart.

"Nothing arrived" is never judged by waiting: the same sender then sends a marker to the same
recipient, which the server delivers after anything the first stanza caused.

Run: /usr/bin/python3 test_carbons_blocking.py --kabard PATH --kabarctl PATH
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import (NS_CARBONS, NS_CLIENT, NS_FORWARD, carbon, error_condition,  # noqa: E402
                      online, q, tostr, until_marker)
from xmpp_raw import enable_carbons as enable  # noqa: E402

R = kabartest.Results("carbons_blocking")
DOMAIN = "localhost"
PW = {"romeo": "romeo-pw", "juliet": "juliet-pw", "tybalt": "tybalt-pw"}
NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
section = R.section
@section
def carbons(k):
    home = online(k.port, "romeo", PW["romeo"], "home")
    garden = online(k.port, "romeo", PW["romeo"], "garden")
    plain = online(k.port, "romeo", PW["romeo"], "plain")
    juliet = online(k.port, "juliet", PW["juliet"], "balcony")
    r = home.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=DOMAIN)
    R.check(any(f.get("var") == NS_CARBONS for f in r.iter(q("http://jabber.org/protocol/disco#info", "feature"))),
            "disco#info announces urn:xmpp:carbons:2")
    R.check(enable(home) and enable(garden), "enable answers result")
    R.check(enable(garden), "enabling again answers result too (§8)")
    for c in (home, garden, plain, juliet):
        c.drain(0.05)

    # §5.1 received
    juliet.message("romeo@localhost/garden", "to garden", id_="r1")
    garden.expect_message("to garden")
    got = until_marker(home, juliet)
    copies = [carbon(e, "received") for e in got if carbon(e, "received") is not None]
    R.check(len(copies) == 1 and copies[0].findtext(q(NS_CLIENT, "body")) == "to garden",
            "the other enabled resource gets a <received/> copy (%s)" % [tostr(e) for e in got])
    wrapper = [e for e in got if carbon(e, "received") is not None]
    R.check(bool(wrapper) and wrapper[0].get("from") == "romeo@localhost"
            and wrapper[0].get("to") == "romeo@localhost/home",
            "the copy is from the bare JID to the resource")
    R.check(bool(copies) and copies[0].get("from") == "juliet@localhost/balcony",
            "the forwarded original keeps its sender")
    R.check(not any(carbon(e, "received") is not None for e in until_marker(plain, juliet)),
            "a resource without carbons gets no copy")
    R.check(not any(carbon(e, "received") is not None for e in until_marker(garden, juliet)),
            "the addressed resource gets the original only")

    # §5.2 sent
    home.message("juliet@localhost", "from home", id_="s1")
    juliet.expect_message("from home")
    got = until_marker(garden, home)
    copies = [carbon(e, "sent") for e in got if carbon(e, "sent") is not None]
    R.check(len(copies) == 1 and copies[0].get("to") == "juliet@localhost"
            and copies[0].get("from") == "romeo@localhost/home",
            "the other enabled resource gets a <sent/> copy")
    # A message from the resource without carbons is copied to the enabled ones all the same.
    plain.message("juliet@localhost", "from plain")
    got = until_marker(home, plain)
    R.check(any(carbon(e, "sent") is not None for e in got),
            "a message sent by a resource without carbons is copied to the enabled ones")
    got = until_marker(garden, plain)
    R.check(any(carbon(e, "sent") is not None for e in got), "to every enabled one")

    # §7 private
    home.send("<message to='juliet@localhost' type='chat'><body>secret</body>"
              "<private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>")
    m = juliet.expect_message("secret")
    R.check(m.find(q(NS_CARBONS, "private")) is not None, "<private/> reaches the recipient")
    R.check(not any(carbon(e, "sent") is not None for e in until_marker(garden, home)),
            "<private/> is not copied to the sender's other resources")
    juliet.send("<message to='romeo@localhost/garden' type='chat'><body>secret2</body>"
                "<private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>")
    garden.expect_message("secret2")
    R.check(not any(carbon(e, "received") is not None for e in until_marker(home, juliet)),
            "<private/> is not copied to the recipient's other resources")

    # §6.1: errors and headlines are not copied; a normal message with a body is.
    juliet.send("<message to='romeo@localhost/garden' type='headline'><body>news</body></message>")
    juliet.send("<message to='romeo@localhost/garden' type='error' id='e'><error type='cancel'>"
                "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    juliet.send("<message to='romeo@localhost/garden'><body>normal</body></message>")
    got = until_marker(home, juliet)
    bodies = [carbon(e, "received").findtext(q(NS_CLIENT, "body")) for e in got
              if carbon(e, "received") is not None]
    R.check(bodies == ["normal"], "only the normal message with a body is copied (%s)" % bodies)

    # §11: a forged carbon from another account is not made a real one.
    tybalt = online(k.port, "tybalt", PW["tybalt"], "home")
    tybalt.send("<message to='romeo@localhost/garden' type='chat'><received xmlns='%s'>"
                "<forwarded xmlns='%s'><message xmlns='jabber:client' from='juliet@localhost/balcony'"
                " to='romeo@localhost/garden' type='chat'><body>forged</body></message>"
                "</forwarded></received></message>" % (NS_CARBONS, NS_FORWARD))
    got = until_marker(garden, tybalt)
    forged = [e for e in got if e.find(q(NS_CARBONS, "received")) is not None]
    R.check(len(forged) == 1 and forged[0].get("from") == "tybalt@localhost/home",
            "a forged carbon arrives from its real sender, not the bare JID")
    got = until_marker(home, tybalt)
    R.check(not any(e.find(q(NS_CARBONS, "received")) is not None for e in got),
            "a forged carbon is not copied to the other resources")

    # Disable: no more copies.
    r = home.iq("set", "<disable xmlns='%s'/>" % NS_CARBONS)
    R.check(r.get("type") == "result", "disable answers result")
    juliet.message("romeo@localhost/garden", "after disable")
    garden.expect_message("after disable")
    R.check(not any(carbon(e, "received") is not None for e in until_marker(home, juliet)),
            "a disabled resource gets no copies")
    for c in (home, garden, plain, juliet, tybalt):
        c.close()


def blocking_iq(c, op, jids=()):
    items = "".join("<item jid='%s'/>" % j for j in jids)
    return c.iq("set", "<%s xmlns='%s'>%s</%s>" % (op, NS_BLOCKING, items, op))


def blocklist(c):
    r = c.iq("get", "<blocklist xmlns='%s'/>" % NS_BLOCKING)
    bl = r.find(q(NS_BLOCKING, "blocklist"))
    return None if bl is None else sorted(i.get("jid") for i in bl.findall(q(NS_BLOCKING, "item")))


@section
def blocking(k):
    # romeo and juliet are subscribed both ways.
    for a, b in (("romeo", "juliet"), ("juliet", "romeo")):
        c = online(k.port, a, PW[a], "setup")
        c.send("<presence to='%s@localhost' type='subscribe'/>" % b)
        c.iq("get", "<query xmlns='jabber:iq:roster'/>")  # the presence is handled before this
        c.close()
    for a, b in (("juliet", "romeo"), ("romeo", "juliet")):
        c = online(k.port, a, PW[a], "setup")
        c.send("<presence to='%s@localhost' type='subscribed'/>" % b)
        c.iq("get", "<query xmlns='jabber:iq:roster'/>")
        c.close()
    romeo = online(k.port, "romeo", PW["romeo"], "home")
    romeo2 = online(k.port, "romeo", PW["romeo"], "phone")
    juliet = online(k.port, "juliet", PW["juliet"], "balcony")
    romeo.expect_presence(from_="juliet@localhost/balcony")
    R.check(blocklist(romeo) == [] and blocklist(romeo2) == [], "the blocklist starts empty")
    r = romeo.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=DOMAIN)
    R.check(any(f.get("var") == NS_BLOCKING for f in r.iter(q("http://jabber.org/protocol/disco#info", "feature"))),
            "disco#info announces urn:xmpp:blocking")
    romeo.drain(0.05)
    romeo2.drain(0.05)
    juliet.drain(0.05)

    r = blocking_iq(romeo, "block")
    R.check(error_condition(r) == "bad-request", "a block with no item is a bad request")
    r = blocking_iq(romeo, "block", ["juliet@localhost"])
    R.check(r.get("type") == "result", "block answers result")
    push = romeo2.wait_for(lambda e: e.tag == q(NS_CLIENT, "iq") and e.get("type") == "set"
                           and e.find(q(NS_BLOCKING, "block")) is not None, what="block push")
    R.check([i.get("jid") for i in push.iter(q(NS_BLOCKING, "item"))] == ["juliet@localhost"],
            "the other resource that fetched the list gets the push")
    p = juliet.expect_presence(from_="romeo@localhost/home", type="unavailable")
    R.check(p is not None, "the blocked contact sees the user go unavailable")
    p = romeo.expect_presence(from_="juliet@localhost/balcony", type="unavailable")
    R.check(p is not None, "the user sees the blocked contact go unavailable")

    # §3.5 inbound
    juliet.message("romeo@localhost", "blocked?", id_="b1")
    err = juliet.expect_message(None, type="error", id="b1")
    R.check(error_condition(err) == "service-unavailable",
            "a message from a blocked JID is answered service-unavailable")
    r = juliet.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="romeo@localhost/home")
    R.check(error_condition(r) == "service-unavailable",
            "an IQ from a blocked JID is answered service-unavailable")
    juliet.send("<presence to='romeo@localhost/home'/>")
    # §3.3 outbound
    romeo.message("juliet@localhost", "to blocked", id_="o1")
    err = romeo.expect_message(None, type="error", id="o1")
    e = err.find(q(NS_CLIENT, "error"))
    R.check(error_condition(err) == "not-acceptable" and e is not None
            and e.find(q(NS_BLOCKING_ERRORS, "blocked")) is not None,
            "the user's message to a blocked JID: not-acceptable with <blocked/>")
    # Presence changes are hidden both ways.
    romeo.send("<presence><show>away</show></presence>")
    juliet.send("<presence><show>dnd</show></presence>")
    tybalt = online(k.port, "tybalt", PW["tybalt"], "home")
    got = until_marker(romeo, tybalt)
    # (Both got unavailable from each of the other's resources at the block.)
    R.check(not any(e.get("from", "").startswith("juliet@") and e.get("type") != "unavailable"
                    for e in got), "nothing from juliet reaches romeo while blocked (%s)"
            % [tostr(e) for e in got])
    got = until_marker(juliet, tybalt)
    R.check(not any(e.get("from", "").startswith("romeo@") and e.get("type") != "unavailable"
                    for e in got), "romeo's presence does not reach juliet while blocked (%s)"
            % [tostr(e) for e in got])

    # The blocklist survives a restart.
    for c in (romeo, romeo2, juliet, tybalt):
        c.close()
    k.stop()
    k.start()
    romeo = online(k.port, "romeo", PW["romeo"], "home")
    juliet = online(k.port, "juliet", PW["juliet"], "balcony")
    R.check(blocklist(romeo) == ["juliet@localhost"], "the blocklist is kept across a restart")
    juliet.message("romeo@localhost/home", "after restart", id_="b2")
    err = juliet.expect_message(None, type="error", id="b2")
    R.check(error_condition(err) == "service-unavailable", "and still enforced after it")
    romeo.drain(0.05)
    juliet.drain(0.05)
    r = blocking_iq(romeo, "unblock", ["juliet@localhost"])
    R.check(r.get("type") == "result", "unblock answers result")
    p = juliet.expect_presence(from_="romeo@localhost/home")
    R.check(p.get("type") is None, "the unblocked contact gets the user's current presence")
    p = romeo.expect_presence(from_="juliet@localhost/balcony")
    R.check(p.get("type") is None, "and the user the contact's")
    juliet.message("romeo@localhost/home", "welcome back")
    romeo.expect_message("welcome back")
    R.check(True, "messages flow again after unblock")
    romeo.close()
    juliet.close()


def main():
    args = kabartest.parse_args()
    R.run_sections(kabartest.Kabard(args), PW, (carbons, blocking))


if __name__ == "__main__":
    main()
