"""Raw XML against a real kabard for what third-party clients expect of an account: their own
presence echoed back (RFC 6121 §4.2.2, §4.4.2, §4.5.2), service discovery of the account's bare
JID (XEP-0030, RFC 6121 §8.5), and which messages offline storage keeps (XEP-0160, XEP-0334)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import (NS_CLIENT, NS_DISCO_INFO, Timeout, error_condition,  # noqa: E402
                      online, q, tostr)

R = kabartest.Results("account_behaviour")
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PW = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw",
      "erin": "erin-pw"}


def presence_from(c, frm, timeout=3, type_=None):
    """The next presence from `frm` (of the given type; None: available), or None."""
    def pred(el):
        return (el.tag == q(NS_CLIENT, "presence") and el.get("from") == frm
                and el.get("type") == type_)
    try:
        return c.wait_for(pred, timeout, what="presence from %s" % frm)
    except Timeout:
        return None


@R.section
def own_presence(k):
    a1 = online(k.port, "alice", PW["alice"], resource="a1")
    p = presence_from(a1, "alice@localhost/a1")
    R.check(p is not None and p.get("to") == "alice@localhost/a1",
            "initial presence comes back to the resource that sent it (§4.2.2) (%s)"
            % (tostr(p) if p is not None else None))
    a2 = online(k.port, "alice", PW["alice"], resource="a2")
    R.check(presence_from(a2, "alice@localhost/a2") is not None,
            "a second resource gets its own initial presence back")
    R.check(presence_from(a1, "alice@localhost/a2") is not None,
            "the first resource gets the second's initial presence")
    R.check(presence_from(a2, "alice@localhost/a1") is not None,
            "the second resource gets the first's current presence")
    a1.send("<presence><show>away</show></presence>")
    p1 = presence_from(a1, "alice@localhost/a1")
    p2 = presence_from(a2, "alice@localhost/a1")
    R.check(p1 is not None and p1.findtext(q(NS_CLIENT, "show")) == "away",
            "a presence update comes back to its sender (§4.4.2)")
    R.check(p2 is not None and p2.findtext(q(NS_CLIENT, "show")) == "away",
            "and goes to the other resource")
    a2.send("<presence type='unavailable'/>")
    R.check(presence_from(a1, "alice@localhost/a2", type_="unavailable") is not None,
            "unavailable presence goes to the other resource (§4.5.2)")
    R.check(presence_from(a2, "alice@localhost/a2", type_="unavailable") is not None,
            "and is reflected to the still-connected sender")
    a2.drain()
    a1.drain()
    a2.send("<presence type='unavailable'/>")
    R.check(presence_from(a2, "alice@localhost/a2", timeout=0.5, type_="unavailable") is None
            and presence_from(a1, "alice@localhost/a2", timeout=0.5, type_="unavailable") is None,
            "a second unavailable from an unavailable resource is not broadcast")
    a2.close()
    a1.close()


def identities(r):
    qq = r.find(q(NS_DISCO_INFO, "query"))
    if qq is None:
        return set()
    return {(i.get("category"), i.get("type")) for i in qq.findall(q(NS_DISCO_INFO, "identity"))}


def features(r):
    qq = r.find(q(NS_DISCO_INFO, "query"))
    if qq is None:
        return set()
    return {f.get("var") for f in qq.findall(q(NS_DISCO_INFO, "feature"))}


@R.section
def disco_of_accounts(k):
    b = online(k.port, "bob", PW["bob"], resource="b")
    c = online(k.port, "carol", PW["carol"], resource="c")
    # bob subscribes to carol's presence and carol approves: carol's item for bob is 'from'.
    b.send("<presence to='carol@localhost' type='subscribe'/>")
    c.expect_presence(type="subscribe")
    c.send("<presence to='bob@localhost' type='subscribed'/>")
    b.expect_presence(type="subscribed")
    b.drain()
    c.drain()
    info = "<query xmlns='%s'/>" % NS_DISCO_INFO
    r = b.iq("get", info, to="bob@localhost")
    R.check(r.get("type") == "result" and r.get("from") == "bob@localhost"
            and ("account", "registered") in identities(r)
            and ("server", "im") not in identities(r),
            "disco#info to one's own bare JID answers for the account (%s)" % tostr(r))
    R.check(NS_DISCO_INFO in features(r), "the account's features include disco#info")
    r = b.iq("get", info)
    R.check(("server", "im") in identities(r), "disco#info with no 'to' is about the server")
    r = b.iq("get", info, to="carol@localhost")
    R.check(r.get("type") == "result" and ("account", "registered") in identities(r),
            "to a contact whose presence one is subscribed to: the account (%s)" % tostr(r))
    r = c.iq("get", info, to="bob@localhost")
    R.check(r.get("type") == "error" and error_condition(r) == "service-unavailable",
            "to an account one has no subscription to: service-unavailable (%s)" % tostr(r))
    r = b.iq("get", info, to="nobody@localhost")
    R.check(r.get("type") == "error" and error_condition(r) == "service-unavailable",
            "to an account that does not exist: service-unavailable (RFC 6121 §8.5.1)")
    items = "<query xmlns='%s'/>" % NS_DISCO_ITEMS
    r = b.iq("get", items, to="bob@localhost")
    qq = r.find(q(NS_DISCO_ITEMS, "query"))
    R.check(r.get("type") == "result" and qq is not None and len(list(qq)) == 0,
            "disco#items to one's own bare JID: an empty result (%s)" % tostr(r))
    r = c.iq("get", items, to="bob@localhost")
    R.check(r.get("type") == "error" and error_condition(r) == "service-unavailable",
            "disco#items to an account one has no subscription to: service-unavailable")
    r = b.iq("get", "<query xmlns='jabber:iq:version'/>", to="bob@localhost")
    R.check(r.get("type") == "error" and error_condition(r) == "service-unavailable",
            "software version to one's own bare JID is not the server's (%s)" % tostr(r))
    b.close()
    c.close()


CHATSTATES = "http://jabber.org/protocol/chatstates"


@R.section
def offline_storage(k):
    b = online(k.port, "bob", PW["bob"], resource="b")
    sent = [
        ("composing", "<composing xmlns='%s'/>" % CHATSTATES, False),
        ("active with a thread", "<active xmlns='%s'/><thread>t1</thread>" % CHATSTATES, False),
        ("receipt", "<received xmlns='urn:xmpp:receipts' id='m0'/>", False),
        ("marker", "<displayed xmlns='urn:xmpp:chat-markers:0' id='m0'/>"
                   "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/>", False),
        ("body with no-store", "<body>forget me</body><no-store xmlns='urn:xmpp:hints'/>", False),
        ("body with no-permanent-store",
         "<body>forget me too</body><no-permanent-store xmlns='urn:xmpp:hints'/>", False),
        ("chat state with store", "<gone xmlns='%s'/><store xmlns='urn:xmpp:hints'/>"
         % CHATSTATES, True),
        ("body and chat state", "<body>hello</body><active xmlns='%s'/>" % CHATSTATES, True),
        ("subject only", "<subject>topic</subject>", True),
        ("other payload", "<x xmlns='jabber:x:conference' jid='room@muc.localhost'/>", True),
    ]
    for i, (what, payload, _) in enumerate(sent):
        b.send("<message to='dave@localhost' type='chat' id='off%d'>%s</message>" % (i, payload))
    b.send("<message to='nobody@localhost' type='chat' id='nobody'><composing xmlns='%s'/>"
           "</message>" % CHATSTATES)
    err = b.wait_for(lambda el: el.tag == q(NS_CLIENT, "message") and el.get("type") == "error",
                     what="an error message")
    R.check(err.get("id") == "nobody" and error_condition(err) == "service-unavailable",
            "a chat state to an account that does not exist bounces (RFC 6121 §8.5.2.1) (%s)"
            % err.get("id"))
    errors = [el for el in b.drain(0.5) if el.get("type") == "error"]
    R.check(not errors, "nothing dropped on purpose bounces (%s)" % [tostr(e) for e in errors])
    d = online(k.port, "dave", PW["dave"], resource="d")
    got = {}
    try:
        while True:
            el = d.wait_for(lambda el: el.tag == q(NS_CLIENT, "message"), 1.5, what="message")
            got[el.get("id")] = el
    except Timeout:
        pass
    for i, (what, _, stored) in enumerate(sent):
        R.check(("off%d" % i in got) == stored,
                "%s: %s" % (what, "stored and delivered" if stored else "not stored"))
    d.close()
    b.close()


def main():
    args = kabartest.parse_args()
    R.run_sections(kabartest.Kabard(args), PW, (own_presence, disco_of_accounts, offline_storage))


if __name__ == "__main__":
    main()
