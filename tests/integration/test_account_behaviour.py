"""Raw XML against a real kabard for what third-party clients expect of an account: their own
presence echoed back (RFC 6121 §4.2.2, §4.4.2, §4.5.2)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import NS_CLIENT, Timeout, online, q, tostr  # noqa: E402

R = kabartest.Results("account_behaviour")
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


def main():
    args = kabartest.parse_args()
    k = kabartest.Kabard(args)
    with k:
        for user, pw in PW.items():
            k.add_user(user, pw)
        for fn in (own_presence,):
            fn(k)
            if not k.alive():
                R.check(False, "kabard died during %s" % fn.__name__)
                break
        R.check(k.alive(), "kabard alive after all sections")
    R.finish()


if __name__ == "__main__":
    main()
