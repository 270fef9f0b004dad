"""RFC 6121 §3.1 in the order test_kabar_sendfile_fallback makes happen, in raw XML, every roster
push on both sides checked: alice asks frank while frank is online; frank approves and asks
back while alice is offline (as slixmpp's auto_authorize and auto_subscribe do), then asks
again; alice approves in a later short session. Both rosters end "both".

alice's sessions are like kabar's roster commands: they fetch the roster (so they are
"interested resources", RFC 6121 §2.1.6, and get pushes) and send no presence. frank stays
online with his roster fetched. A session that never fetched the roster gets no pushes
(§2.1.6): frank's second resource checks that too.

Run: /usr/bin/python3 test_raw_subscription_order.py --kabard PATH --kabarctl PATH
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import NS_CLIENT, NS_ROSTER, login, online, q, tostr  # noqa: E402

R = kabartest.Results("raw_subscription_order")
PW = {"alice": "alice-pw-7", "frank": "frank-pw-7"}
ALICE, FRANK = "alice@localhost", "frank@localhost"


def is_push(el):
    return el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set" and \
        el.find(q(NS_ROSTER, "query")) is not None


def pushes(c):
    """The roster pushes `c` has received (answered, RFC 6121 §2.1.6) up to the answer to a ping
    sent now, as (jid, subscription, ask) tuples in order; other elements stay queued."""
    c.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
    found = [el for el in c.queue if is_push(el)]
    c.queue = [el for el in c.queue if not is_push(el)]
    out = []
    for el in found:
        c.send("<iq type='result' id='%s'/>" % el.get("id"))
        for item in el.find(q(NS_ROSTER, "query")).findall(q(NS_ROSTER, "item")):
            out.append((item.get("jid"), item.get("subscription"), item.get("ask")))
    return out


def roster_of(c):
    r = c.iq("get", "<query xmlns='jabber:iq:roster'/>")
    qq = r.find(q(NS_ROSTER, "query"))
    return {i.get("jid"): (i.get("subscription"), i.get("ask"))
            for i in (qq.findall(q(NS_ROSTER, "item")) if qq is not None else [])}


def alice_session():
    """A short session like kabar's roster commands: roster fetched, no presence."""
    a = login(PORT, "alice", PW["alice"], resource="kabar")
    roster_of(a)
    return a


def main():
    global PORT
    args = kabartest.parse_args()
    with kabartest.Kabard(args) as k:
        PORT = k.port
        for user, pw in PW.items():
            k.add_user(user, pw)
        f = online(k.port, "frank", PW["frank"], resource="slix")
        f2 = login(k.port, "frank", PW["frank"], resource="noroster")  # never asks for the roster
        f2.presence()
        for c in (f, f2):  # their own presence back, and the like
            c.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
            c.queue.clear()

        # 1. alice: roster add frank (roster set, then subscribe; §3.1.2).
        a = alice_session()
        r = a.iq("set", "<query xmlns='jabber:iq:roster'><item jid='%s'/></query>" % FRANK)
        R.check(r.get("type") == "result", "alice's roster set -> result")
        a.presence(to=FRANK, type="subscribe")
        got = pushes(a)
        R.check(got == [(FRANK, "none", None), (FRANK, "none", "subscribe")],
                "alice: a push for the new item, then one with ask='subscribe' (§3.1.2): %s" % got)
        a.close()
        p = f.expect_presence(type="subscribe")
        R.check(p.get("from") == ALICE, "frank gets alice's subscribe from her bare JID (%s)"
                % tostr(p))
        got = pushes(f)
        R.check(got == [], "frank: no push for a request from someone not in his roster (§3.1.3): "
                "%s" % got)

        # 2. frank approves, then asks back (alice offline).
        f.presence(to=ALICE, type="subscribed")
        got = pushes(f)
        R.check(got == [(ALICE, "from", None)],
                "frank: one push, subscription 'from' (§3.1.5, None + Pending In -> From): %s"
                % got)
        f.presence(to=ALICE, type="subscribe")
        got = pushes(f)
        R.check(got == [(ALICE, "from", "subscribe")],
                "frank: one push, 'from' with ask='subscribe' (§3.1.2, From -> From + Pending "
                "Out): %s" % got)
        # 3. and again (the test sends it once more after slixmpp's own).
        f.presence(to=ALICE, type="subscribe")
        got = pushes(f)
        R.check(got in ([], [(ALICE, "from", "subscribe")]),
                "frank: asking again changes nothing (no push, or the same item): %s" % got)

        # 4. alice, later: her roster has frank as 'to' (his approval came while she was away).
        a = alice_session()
        items = roster_of(a)
        R.check(items.get(FRANK) == ("to", None),
                "alice's roster: frank 'to', no ask (None + Pending Out -> To + Pending In): %s"
                % items)
        # kabar roster approve: 'subscribed' only (she already has 'to': no subscribe back).
        a.presence(to=FRANK, type="subscribed")
        got = pushes(a)
        R.check(got == [(FRANK, "both", None)],
                "alice: one push, subscription 'both' (§3.1.5, To + Pending In -> Both): %s" % got)
        a.close()
        # The push comes before the 'subscribed' presence (kabard sends them in that order).
        subd = f.expect_presence(type="subscribed")
        R.check(subd.get("from") == ALICE, "frank gets alice's 'subscribed' (§3.1.6): %s"
                % tostr(subd))
        R.check(any(is_push(e) for e in f.queue), "a roster push came before the presence")
        got = pushes(f)
        R.check(got == [(ALICE, "both", None)],
                "frank: one push, subscription 'both', no ask (§3.1.6, From + Pending Out -> "
                "Both), before the presence: %s" % got)
        # The resource that never asked for the roster: the presence, no pushes (§2.1.6).
        subd = f2.expect_presence(type="subscribed")
        got = pushes(f2)
        R.check(got == [], "frank's resource that never fetched the roster gets alice's "
                "'subscribed' (§3.1.6: available resources) and no roster push: %s" % got)

        R.check(roster_of(f).get(ALICE) == ("both", None), "frank's roster: alice 'both'")
        a = alice_session()
        R.check(roster_of(a).get(FRANK) == ("both", None), "alice's roster: frank 'both'")
        a.close()
        f.close()
        f2.close()
        R.check(k.alive(), "kabard alive at the end")
    R.finish()


if __name__ == "__main__":
    main()
