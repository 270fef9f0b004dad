"""`kabarctl user delete` while kabard runs: kabarctl tells kabard through its control socket,
the account's live sessions end with <not-authorized/>, its contacts see each resource go
unavailable and their subscriptions with it end, and its data (roster, vCard) is gone; without a running kabard kabarctl deletes the
account itself and says so."""
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import (NS_CLIENT, NS_ROSTER, NS_SASL, NS_VCARD, Conn, XmppError,  # noqa: E402
                      online, q)

R = kabartest.Results("account_delete")
PW = {"alice": "alice-pw", "bob": "bob-pw"}


def subscribe(a, a_jid, b, b_jid):
    """a subscribes to b's presence and b approves."""
    a.send("<presence to='%s' type='subscribe'/>" % b_jid)
    b.expect_presence(type="subscribe")
    b.send("<presence to='%s' type='subscribed'/>" % a_jid)
    a.expect_presence(type="subscribed")


def main():
    args = kabartest.parse_args()
    k = kabartest.Kabard(args)
    try:
        k.start()
        for user, pw in PW.items():
            k.add_user(user, pw)
        sock = os.path.join(k.data_dir, "kabard.sock")
        mode = os.stat(sock).st_mode if os.path.exists(sock) else 0
        R.check(stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600,
                "kabard listens on DATA/kabard.sock, mode 0600 (%o)" % stat.S_IMODE(mode))
        a1 = online(k.port, "alice", PW["alice"], resource="a1")
        b = online(k.port, "bob", PW["bob"], resource="b")
        subscribe(a1, "alice@localhost", b, "bob@localhost")
        subscribe(b, "bob@localhost", a1, "alice@localhost")
        a1.send("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>")
        a1.expect(q(NS_CLIENT, "iq"), id="v1")
        a2 = online(k.port, "alice", PW["alice"], resource="a2")
        b.expect_presence(**{"from": "alice@localhost/a2"})
        b.drain()

        r = k.ctl("user", "delete", "alice", check=False)
        R.check(r.returncode == 0 and "running kabard" in r.stdout,
                "kabarctl user delete: exit 0, says the running kabard was told (%s%s)"
                % (r.stdout.strip(), r.stderr.strip()))
        for c, res in ((a1, "a1"), (a2, "a2")):
            try:
                cond = c.stream_error(timeout=5)
            except XmppError as e:
                cond = str(e)
            R.check(cond == "not-authorized",
                    "alice/%s's stream ends with <not-authorized/> (%s)" % (res, cond))
        for res in ("a1", "a2"):
            try:
                b.expect_presence(timeout=5, type="unavailable",
                                  **{"from": "alice@localhost/" + res})
                ok = True
            except XmppError:
                ok = False
            R.check(ok, "bob sees alice/%s go unavailable" % res)
        # Both of bob's subscriptions with alice end: his roster item stays, pushed as 'none'.
        try:
            push = b.wait_for(
                lambda el: el.tag == q(NS_CLIENT, "iq") and el.get("type") == "set" and any(
                    i.get("jid") == "alice@localhost" and i.get("subscription") == "none"
                    and i.get("ask") is None
                    for i in el.iter(q(NS_ROSTER, "item"))), 5, what="roster push")
            b.send("<iq type='result' id='%s'/>" % push.get("id"))
            ok = True
        except XmppError:
            ok = False
        R.check(ok, "bob gets a roster push: alice@localhost, subscription 'none'")
        r = b.iq("get", "<query xmlns='jabber:iq:roster'/>")
        items = {i.get("jid"): i.get("subscription")
                 for i in r.iter(q(NS_ROSTER, "item"))}
        R.check(items == {"alice@localhost": "none"},
                "bob's roster keeps alice with subscription 'none' (%s)" % items)
        c = Conn(k.port)
        c.open_stream()
        c.starttls()
        el = c.sasl_plain("alice", PW["alice"])
        R.check(el.find(q(NS_SASL, "not-authorized")) is not None,
                "the deleted account cannot log in")
        c.close()
        listed = k.ctl("user", "list", check=False)
        R.check(listed.stdout.split() == ["bob"], "kabarctl lists bob only (%s)"
                % listed.stdout.split())
        r = k.ctl("user", "delete", "alice", check=False)
        R.check(r.returncode == 1 and "no such user: alice" in r.stderr,
                "deleting it again: exit 1, no such user (%s)" % r.stderr.strip())

        # The name made again starts with nothing of the old account's.
        k.add_user("alice", "new-pw")
        a = online(k.port, "alice", "new-pw", resource="n", roster=False)
        r = a.iq("get", "<query xmlns='jabber:iq:roster'/>")
        items = r.find(q(NS_ROSTER, "query"))
        R.check(items is not None and len(list(items)) == 0, "the new alice has an empty roster")
        r = a.iq("get", "<vCard xmlns='vcard-temp'/>")
        vc = r.find(q(NS_VCARD, "vCard"))
        R.check(vc is None or vc.findtext(q(NS_VCARD, "FN")) is None,
                "and no vCard of the old one")
        a.close()
        b.close()
        R.check(k.stop() == 0, "kabard stops cleanly")
        R.check(not os.path.exists(sock), "and removes its control socket")

        # With no kabard running, kabarctl deletes the account itself.
        r = k.ctl("user", "delete", "bob", check=False)
        R.check(r.returncode == 0 and "no kabard is running" in r.stdout,
                "kabarctl user delete without kabard: exit 0, says so (%s%s)"
                % (r.stdout.strip(), r.stderr.strip()))
        listed = k.ctl("user", "list", check=False)
        R.check(listed.stdout.split() == ["alice"], "bob is gone (%s)" % listed.stdout.split())
    finally:
        if k.proc is not None and k.proc.poll() is not None and R.failed:
            sys.stderr.write(k.read_log()[-3000:])
        k.cleanup()
    R.finish()


if __name__ == "__main__":
    main()
