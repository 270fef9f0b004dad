"""Personal eventing (XEP-0163 on XEP-0060), entity capabilities (XEP-0115) and private XML
storage (XEP-0049) in raw XML against a real kabard: the edge cases the XEPs spell out, each with
its exact error.

"Nothing arrived" is never judged by waiting: the client then pings the server, whose answer
comes after anything its earlier stanzas caused.

Run: /usr/bin/python3 test_pep_raw.py --kabard PATH --kabarctl PATH
"""
import base64
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import NS_CLIENT, error_condition, online, q, tostr  # noqa: E402

R = kabartest.Results("pep_raw")
DOMAIN = "localhost"
PW = {"juliet": "juliet-pw", "romeo": "romeo-pw", "tybalt": "tybalt-pw"}
PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = PUBSUB + "#owner"
EVENT = PUBSUB + "#event"
ERRORS = PUBSUB + "#errors"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
NICK = "http://jabber.org/protocol/nick"
section = R.section


def caps(notify):
    """The disco#info a client answers, and its XEP-0115 sha-1 ver (§5.1)."""
    features = sorted([DISCO_INFO] + [n + "+notify" for n in notify])
    s = "client/pc//<" + "".join(f + "<" for f in features)
    ver = base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()
    query = ("<identity category='client' type='pc'/>"
             + "".join("<feature var='%s'/>" % f for f in features))
    return ver, query


def caps_presence(ver, extra=""):
    return ("<presence>%s<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
            "node='http://raw.test' ver='%s'/></presence>" % (extra, ver))


def settle(c):
    """Pings the server and returns what arrived before the answer."""
    c.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
    got, c.queue = c.queue, []
    return got


def disco_queries(got):
    return [e for e in got if e.tag == q(NS_CLIENT, "iq") and e.get("type") == "get"
            and e.find(q(DISCO_INFO, "query")) is not None]


def events(got):
    return [e for e in got if e.tag == q(NS_CLIENT, "message") and e.find(q(EVENT, "event")) is not None]


def announce(c, notify):
    """Available presence with caps; answers the server's disco#info if it asks. Returns whether
    it asked and what else arrived."""
    ver, query = caps(notify)
    c.send(caps_presence(ver))
    got = settle(c)
    asked = disco_queries(got)
    for iq in asked:
        node = iq.find(q(DISCO_INFO, "query")).get("node")
        c.send("<iq type='result' id='%s' to='%s'><query xmlns='%s' node='%s'>%s</query></iq>"
               % (iq.get("id"), iq.get("from"), DISCO_INFO, node, query))
    got += settle(c)
    return bool(asked), got


def subscribe_both(a, b):
    ja, jb = a.jid.split("/")[0], b.jid.split("/")[0]
    for x, y, jx, jy in ((a, b, ja, jb), (b, a, jb, ja)):
        x.send("<presence to='%s' type='subscribe'/>" % jy)
        y.expect_presence(type="subscribe", **{"from": jx})
        y.send("<presence to='%s' type='subscribed'/>" % jx)
        x.expect_presence(type="subscribed", **{"from": jy})
    settle(a)
    settle(b)


def publish(c, node, item_id, payload, options=None, to=None):
    opts = ""
    if options is not None:
        opts = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE' type='hidden'><value>%s</value></field>"
                % options.pop("FORM_TYPE", PUBSUB + "#publish-options"))
        for k, v in options.items():
            opts += "<field var='%s'><value>%s</value></field>" % (k, v)
        opts += "</x></publish-options>"
    item = "<item id='%s'>%s</item>" % (item_id, payload) if item_id else "<item>%s</item>" % payload
    return c.iq("set", "<pubsub xmlns='%s'><publish node='%s'>%s</publish>%s</pubsub>"
                % (PUBSUB, node, item if payload is not None else "", opts), to=to)


def has_error(r, condition, pubsub_condition=None, type_=None):
    err = r.find(q(NS_CLIENT, "error"))
    if r.get("type") != "error" or err is None or error_condition(r) != condition:
        return False
    if type_ is not None and err.get("type") != type_:
        return False
    return pubsub_condition is None or err.find(q(ERRORS, pubsub_condition)) is not None


def nick(n):
    return "<nick xmlns='%s'>%s</nick>" % (NICK, n)


@section
def errors(k):
    j = online(k.port, "juliet", PW["juliet"], "balcony")
    t = online(k.port, "tybalt", PW["tybalt"], "street")
    r = publish(j, NICK, "current", nick("J"), {"pubsub#access_model": "presence"})
    R.check(r.get("type") == "result", "publish with a met precondition auto-creates the node")
    r = publish(j, NICK, "current", nick("J"), {"pubsub#access_model": "open"})
    R.check(has_error(r, "conflict", "precondition-not-met", "cancel"),
            "a precondition the node does not meet: <conflict/> + <precondition-not-met/> (%s)"
            % tostr(r))
    r = publish(j, NICK, "current", nick("J"), {"pubsub#frobnicate": "1"})
    R.check(has_error(r, "bad-request", type_="modify"),
            "an unknown publish option: <bad-request/> (XEP-0060 §7.1.5)")
    r = publish(j, NICK, "current", nick("J"), {"pubsub#access_model": "roster"})
    R.check(has_error(r, "bad-request"), "an access model kabard does not offer: <bad-request/>")
    r = publish(j, NICK, "current", nick("J"), {"FORM_TYPE": "urn:other", "pubsub#title": "x"})
    R.check(has_error(r, "bad-request"), "publish-options of another FORM_TYPE: <bad-request/>")
    r = publish(j, NICK, None, None)
    R.check(has_error(r, "bad-request", "item-required"), "no item: <item-required/>")
    r = publish(j, NICK, "x", "")
    R.check(has_error(r, "bad-request", "payload-required"), "an empty item: <payload-required/>")
    r = publish(j, NICK, "x", nick("a") + nick("b"))
    R.check(has_error(r, "bad-request", "invalid-payload"), "two payloads: <invalid-payload/>")
    r = publish(j, "", "x", nick("a"))
    R.check(has_error(r, "bad-request", "nodeid-required"), "no node: <nodeid-required/>")
    r = publish(t, NICK, "current", nick("T"), to="juliet@localhost")
    R.check(has_error(r, "forbidden", type_="auth"), "publishing to someone else's node: <forbidden/>")
    r = publish(j, NICK, "current", nick("J"), to=DOMAIN)
    R.check(has_error(r, "service-unavailable"), "the domain has no pubsub service")
    r = j.iq("get", "<pubsub xmlns='%s'><items node='nope'/></pubsub>" % PUBSUB)
    R.check(has_error(r, "item-not-found", type_="cancel"), "items of no such node: <item-not-found/>")
    r = j.iq("set", "<pubsub xmlns='%s'><retract node='%s'><item id='nope'/></retract></pubsub>"
             % (PUBSUB, NICK))
    R.check(has_error(r, "item-not-found"), "retracting no such item: <item-not-found/>")
    r = j.iq("set", "<pubsub xmlns='%s'><create node='%s'/></pubsub>" % (PUBSUB, NICK))
    R.check(has_error(r, "conflict"), "creating an existing node: <conflict/>")
    r = t.iq("get", "<pubsub xmlns='%s'><configure node='%s'/></pubsub>" % (OWNER, NICK),
             to="juliet@localhost")
    R.check(has_error(r, "forbidden"), "configuring someone else's node: <forbidden/>")
    r = t.iq("get", "<pubsub xmlns='%s'><items node='%s'/></pubsub>" % (PUBSUB, NICK),
             to="juliet@localhost")
    R.check(has_error(r, "not-authorized", "presence-subscription-required", "auth"),
            "a stranger reading a presence node: <not-authorized/> + "
            "<presence-subscription-required/>")
    r = t.iq("set", "<pubsub xmlns='%s'><subscribe node='%s' jid='juliet@localhost'/></pubsub>"
             % (PUBSUB, NICK), to="juliet@localhost")
    R.check(has_error(r, "bad-request", "invalid-jid"), "subscribing someone else: <invalid-jid/>")
    # Configuration: the form, a change, and an open node a stranger may subscribe to.
    r = j.iq("get", "<pubsub xmlns='%s'><configure node='%s'/></pubsub>" % (OWNER, NICK))
    fields = {f.get("var"): f.findtext(q("jabber:x:data", "value"))
              for f in r.iter(q("jabber:x:data", "field"))}
    R.check(fields.get("pubsub#access_model") == "presence" and fields.get("pubsub#max_items") == "1",
            "the configuration form shows the node's options (%s)" % fields)
    r = j.iq("set", "<pubsub xmlns='%s'><configure node='%s'><x xmlns='jabber:x:data' "
             "type='submit'><field var='FORM_TYPE' type='hidden'><value>%s#node_config</value>"
             "</field><field var='pubsub#access_model'><value>open</value></field></x>"
             "</configure></pubsub>" % (OWNER, NICK, PUBSUB))
    R.check(r.get("type") == "result", "the owner opens the node")
    r = t.iq("set", "<pubsub xmlns='%s'><subscribe node='%s' jid='%s'/></pubsub>"
             % (PUBSUB, NICK, t.jid), to="juliet@localhost")
    sub = r.find(".//" + q(PUBSUB, "subscription"))
    R.check(sub is not None and sub.get("subscription") == "subscribed",
            "a stranger subscribes to the open node")
    got = events(settle(t))
    R.check(len(got) == 1 and got[0].find(".//" + q(NICK, "nick")).text == "J",
            "and gets its last item")
    publish(j, NICK, "current", nick("J2"))
    got = events(settle(t))
    R.check(len(got) == 1 and got[0].find(".//" + q(NICK, "nick")).text == "J2",
            "and the next publication, without caps (an explicit subscription)")
    r = t.iq("set", "<pubsub xmlns='%s'><unsubscribe node='%s' jid='%s'/></pubsub>"
             % (PUBSUB, NICK, t.jid), to="juliet@localhost")
    R.check(r.get("type") == "result", "it unsubscribes")
    r = t.iq("set", "<pubsub xmlns='%s'><unsubscribe node='%s' jid='%s'/></pubsub>"
             % (PUBSUB, NICK, t.jid), to="juliet@localhost")
    R.check(has_error(r, "unexpected-request", "not-subscribed"),
            "unsubscribing again: <unexpected-request/> + <not-subscribed/>")
    publish(j, NICK, "current", nick("J3"))
    R.check(not events(settle(t)), "no more events after unsubscribing")
    # The owner's other requests: affiliations, the default configuration, a purge.
    r = j.iq("get", "<pubsub xmlns='%s'><affiliations node='%s'/></pubsub>" % (OWNER, NICK))
    affs = {a.get("jid"): a.get("affiliation") for a in r.iter(q(OWNER, "affiliation"))}
    R.check(affs == {"juliet@localhost": "owner"}, "the node's affiliations: its owner (%s)" % affs)
    r = j.iq("set", "<pubsub xmlns='%s'><affiliations node='%s'><affiliation "
             "jid='tybalt@localhost' affiliation='outcast'/></affiliations></pubsub>" % (OWNER, NICK))
    R.check(r.get("type") == "result", "the owner makes tybalt an outcast")
    r = t.iq("get", "<pubsub xmlns='%s'><items node='%s'/></pubsub>" % (PUBSUB, NICK),
             to="juliet@localhost")
    R.check(has_error(r, "forbidden", type_="auth"), "an outcast reading the open node: <forbidden/>")
    r = j.iq("get", "<pubsub xmlns='%s'><default/></pubsub>" % OWNER)
    R.check(r.get("type") == "result" and r.find(".//" + q("jabber:x:data", "x")) is not None,
            "the default node configuration is a form")
    r = j.iq("set", "<pubsub xmlns='%s'><purge node='%s'/></pubsub>" % (OWNER, NICK))
    R.check(r.get("type") == "result", "the owner purges the node")
    r = j.iq("get", "<pubsub xmlns='%s'><items node='%s'/></pubsub>" % (PUBSUB, NICK))
    R.check(r.get("type") == "result" and not r.findall(".//" + q(PUBSUB, "item")),
            "and it has no items left")
    # Delete.
    r = j.iq("set", "<pubsub xmlns='%s'><delete node='%s'/></pubsub>" % (OWNER, NICK))
    R.check(r.get("type") == "result", "the owner deletes the node")
    r = j.iq("set", "<pubsub xmlns='%s'><delete node='%s'/></pubsub>" % (OWNER, NICK))
    R.check(has_error(r, "item-not-found"), "deleting it again: <item-not-found/>")
    # Private XML storage (XEP-0049).
    r = j.iq("set", "<query xmlns='jabber:iq:private'/>")
    R.check(has_error(r, "not-acceptable"), "private storage with no element: <not-acceptable/>")
    r = j.iq("get", "<query xmlns='jabber:iq:private'><a xmlns='urn:a'/></query>",
             to="romeo@localhost")
    R.check(has_error(r, "forbidden"), "someone else's private storage: <forbidden/>")
    r = j.iq("get", "<query xmlns='jabber:iq:private'><a xmlns='urn:a'/></query>")
    R.check(r.find(".//" + q("urn:a", "a")) is not None,
            "nothing stored: the element comes back empty")
    for c in (j, t):
        c.close()


@section
def caps_and_notifications(k):
    j = online(k.port, "juliet", PW["juliet"], "balcony")
    r1 = online(k.port, "romeo", PW["romeo"], "orchard")
    subscribe_both(j, r1)
    asked, _ = announce(r1, [NICK])
    R.check(asked, "kabard asks a client with unknown caps for its disco#info, once")
    r2 = online(k.port, "romeo", PW["romeo"], "phone")
    asked, _ = announce(r2, [NICK])
    R.check(not asked, "another client with the same verified hash is not asked again")
    r3 = online(k.port, "romeo", PW["romeo"], "deaf")
    announce(r3, ["urn:xmpp:avatar:metadata"])
    settle(j)
    r = publish(j, NICK, "current", nick("Juliet"))
    R.check(r.get("type") == "result", "juliet publishes her nick")
    for c in (r1, r2):
        got = events(settle(c))
        R.check(len(got) == 1 and got[0].get("from") == "juliet@localhost"
                and got[0].get("type") == "headline"
                and got[0].find(".//" + q(NICK, "nick")).text == "Juliet",
                "%s (nick+notify) gets the event from juliet's bare JID" % c.jid)
    R.check(not events(settle(r3)), "a resource without nick+notify gets none")
    # A new resource's initial presence brings the last item, with its delay.
    r4 = online(k.port, "romeo", PW["romeo"], "tablet")
    _, got = announce(r4, [NICK])
    ev = events(got)
    R.check(len(ev) == 1 and ev[0].find(q("urn:xmpp:delay", "delay")) is not None,
            "a newly available resource gets the last item, stamped (%d)" % len(ev))
    r4.send(caps_presence(caps([NICK])[0], "<show>away</show>"))
    R.check(not events(settle(r4)), "a later presence with the same caps brings nothing again")
    # A hash that does not match its answer is used for that resource only.
    liar = online(k.port, "romeo", PW["romeo"], "liar")
    liar.send(caps_presence("bm90LWEtaGFzaA=="))
    got = settle(liar)
    for iq in disco_queries(got):
        liar.send("<iq type='result' id='%s' to='%s'><query xmlns='%s'><feature var='%s+notify'/>"
                  "</query></iq>" % (iq.get("id"), iq.get("from"), DISCO_INFO, NICK))
    settle(liar)
    other = online(k.port, "romeo", PW["romeo"], "other")
    other.send(caps_presence("bm90LWEtaGFzaA=="))
    R.check(bool(disco_queries(settle(other))),
            "an answer that does not match its hash is not cached for others")
    for c in (j, r1, r2, r3, r4, liar, other):
        c.close()


@section
def deleted_with_the_account(k):
    j = online(k.port, "juliet", PW["juliet"], "balcony")
    publish(j, "urn:test:node", "1", "<x xmlns='urn:test'/>")
    j.iq("set", "<query xmlns='jabber:iq:private'><a xmlns='urn:a'>kept</a></query>")
    j.close()
    k.ctl("user", "delete", "juliet")
    k.add_user("juliet", PW["juliet"])
    j = online(k.port, "juliet", PW["juliet"], "balcony")
    r = j.iq("get", "<pubsub xmlns='%s'><items node='urn:test:node'/></pubsub>" % PUBSUB)
    R.check(has_error(r, "item-not-found"), "a deleted account's nodes are gone")
    r = j.iq("get", "<query xmlns='jabber:iq:private'><a xmlns='urn:a'/></query>")
    R.check(r.findtext(".//" + q("urn:a", "a")) in (None, ""), "and its private XML")
    j.close()


def main():
    args = kabartest.parse_args()
    R.run_sections(kabartest.Kabard(args), PW, (errors, caps_and_notifications, deleted_with_the_account))


if __name__ == "__main__":
    main()
