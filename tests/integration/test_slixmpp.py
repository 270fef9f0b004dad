"""Interoperability with slixmpp (Debian's python3-slixmpp 1.8.3) over STARTTLS.

Covers: in-band registration (XEP-0077) of two accounts, login, a wrong password, the roster at
login, the subscription handshake both ways (ending in 'both' on both sides), presence with show
and status, live message relay both ways, offline storage (order, XEP-0203 delay stamps,
deletion after delivery) and the bounce of a message to an account that does not exist.

Run: /usr/bin/python3 test_slixmpp.py --kabard PATH --kabarctl PATH
"""
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
import slixtest  # noqa: E402
from slixtest import STEP, collect, drain, next_matching  # noqa: E402

from slixmpp.exceptions import IqError, IqTimeout  # noqa: E402

QUIET = 1.5      # seconds of silence that count as "nothing more arrives"
TOTAL = 80.0     # the whole scenario

DOMAIN = "localhost"
ROSTER_NS = "jabber:iq:roster"


class Client(slixtest.Client):
    """One slixmpp client that records what it receives in queues."""

    def __init__(self, jid, password, register=False):
        # xep_0203: delayed delivery; registering: xep_0077 and what it needs.
        super().__init__(jid, password, ("xep_0030", "xep_0203", "xep_0199")
                         + (("xep_0004", "xep_0066", "xep_0077") if register else ()))
        # Subscriptions are answered by the test, never automatically.
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.message_errors = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.subscribes = asyncio.Queue()
        self.roster_pushes = asyncio.Queue()
        self.registered = None
        if register:
            # XEP-0077 before a session exists: slixmpp would hold the IQ back otherwise.
            self._always_send_everything = True
            self.add_event_handler("register", self._on_register)
        # Beside the base's outcomes: no mechanism left is a failed authentication too, and
        # one failure is enough (stop before slixmpp tries the next mechanism).
        self.add_event_handler("failed_auth", lambda e: self.abort())
        self.add_event_handler("no_auth", lambda e: (self.settle("failed_auth"), self.abort()))
        self.add_event_handler("disconnected", lambda e: self.settle("disconnected"))
        self.add_event_handler("message_error", self._on_message_error)
        self.add_event_handler("presence", self._on_presence)
        self.add_event_handler("presence_subscribe", self._on_subscribe)
        self.add_event_handler("roster_update", self._on_roster_update)

    async def _on_register(self, form):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=STEP)
            self.registered = "ok"
        except IqError as e:
            self.registered = e.iq["error"]["condition"]
            self.settle("register-" + self.registered)
            self.disconnect(wait=0.5)
        except IqTimeout:
            self.registered = "timeout"
            self.settle("register-timeout")
            self.disconnect(wait=0.5)

    def keep_message(self, msg):
        return msg["type"] in ("chat", "normal", "")

    def _on_message_error(self, msg):
        self.message_errors.put_nowait(msg)

    def _on_presence(self, pres):
        self.presences.put_nowait(pres)

    def _on_subscribe(self, pres):
        self.subscribes.put_nowait(pres)

    def _on_roster_update(self, iq):
        if iq["type"] == "set":
            self.roster_pushes.put_nowait(iq)

    async def start(self, port):
        outcome = await super().start(port)
        if outcome == "timeout":
            self.abort()
        return outcome

    async def roster_items(self):
        """Fetches the roster with a plain jabber:iq:roster get (no version) and returns
        {jid: (subscription, ask, name, groups)}."""
        iq = self.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        resp = await iq.send(timeout=STEP)
        out = {}
        q = resp.xml.find("{%s}query" % ROSTER_NS)
        if q is None:
            return out
        for item in q.findall("{%s}item" % ROSTER_NS):
            groups = sorted((g.text or "") for g in item.findall("{%s}group" % ROSTER_NS))
            out[item.get("jid")] = (item.get("subscription", "none"), item.get("ask"),
                                    item.get("name"), groups)
        return out


def bare(jid):
    return str(jid).split("/", 1)[0]


async def login(r, port, jid, password, what, presence=True, **presence_kw):
    c = Client(jid, password)
    outcome = await c.start(port)
    ok = r.check(outcome == "session", f"{what}: session started (got {outcome})")
    if ok and presence:
        c.send_presence(**presence_kw)
    return c if ok else None


async def scenario(r, kd):
    port = kd.port
    alice_jid, bob_jid = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    alice_pw, bob_pw = "alice-secret-1", "bob-secret-2"
    clients = []

    try:
        # --- In-band registration (XEP-0077) -------------------------------------------------
        for jid, pw in ((alice_jid, alice_pw), (bob_jid, bob_pw)):
            c = Client(jid + "/reg", pw, register=True)
            clients.append(c)
            outcome = await c.start(port)
            r.check(c.registered == "ok", f"register {jid}: account created ({c.registered})")
            r.check(outcome == "session", f"register {jid}: logged in after registering ({outcome})")
            await c.stop()

        # Registering the same name again is refused with <conflict/>.
        c = Client(alice_jid + "/reg2", "other-password", register=True)
        clients.append(c)
        outcome = await c.start(port)
        r.check(c.registered == "conflict",
                f"register {alice_jid} again: refused with conflict (got {c.registered}, {outcome})")
        await c.stop()

        # --- Wrong password ------------------------------------------------------------------
        c = Client(alice_jid + "/bad", "not-the-password")
        clients.append(c)
        outcome = await c.start(port)
        r.check(outcome == "failed_auth", f"wrong password: failed_auth (got {outcome})")
        r.check(not c.sessionstarted, "wrong password: no session")
        await c.stop()

        # --- Login and roster at login (empty) -----------------------------------------------
        alice = await login(r, port, alice_jid + "/desk", alice_pw, "alice login", presence=False)
        bob = await login(r, port, bob_jid + "/phone", bob_pw, "bob login", presence=False)
        if not (alice and bob):
            return
        clients += [alice, bob]
        r.check(await alice.roster_items() == {}, "alice: empty roster at first login")
        r.check(await bob.roster_items() == {}, "bob: empty roster at first login")
        alice.send_presence()
        bob.send_presence()

        # Alice names Bob in her roster before subscribing.
        iq = alice.Iq()
        iq["type"] = "set"
        iq["roster"]["items"] = {bob_jid: {"name": "Bob", "subscription": "none",
                                           "groups": ["Friends"]}}
        try:
            await iq.send(timeout=STEP)
            r.check(True, "alice: roster set for bob answered")
        except (IqError, IqTimeout) as e:
            r.check(False, f"alice: roster set for bob answered ({e})")
        push = await next_matching(alice.roster_pushes,
                                   lambda p: bob_jid in p["roster"]["items"])
        r.check(push is not None and push["roster"]["items"][bob_jid]["name"] == "Bob",
                "alice: roster push for bob with name")

        # --- Subscription handshake: alice -> bob ---------------------------------------------
        drain(alice.presences)
        drain(bob.presences)
        alice.send_presence(pto=bob_jid, ptype="subscribe")
        sub = await next_matching(bob.subscribes, lambda p: True)
        r.check(sub is not None and bare(sub["from"]) == alice_jid,
                "bob: receives alice's subscription request from her bare JID")
        push = await next_matching(alice.roster_pushes,
                                   lambda p: p["roster"]["items"].get(bob_jid, {}).get("pending_out")
                                   or p.xml.find(".//{%s}item[@ask='subscribe']" % ROSTER_NS)
                                   is not None)
        r.check(push is not None, "alice: roster push with ask='subscribe'")
        bob.send_presence(pto=alice_jid, ptype="subscribed")
        push = await next_matching(
            alice.roster_pushes,
            lambda p: p.xml.find(".//{%s}item[@subscription='to']" % ROSTER_NS) is not None)
        r.check(push is not None, "alice: roster push with subscription 'to'")
        p = await next_matching(alice.presences,
                                lambda p: p["type"] == "subscribed" and bare(p["from"]) == bob_jid)
        r.check(p is not None, "alice: receives 'subscribed' from bob")
        p = await next_matching(alice.presences,
                                lambda p: p["type"] == "available" and str(p["from"]) == bob.boundjid.full)
        r.check(p is not None, "alice: receives bob's presence after approval")

        # --- Subscription handshake: bob -> alice ---------------------------------------------
        bob.send_presence(pto=alice_jid, ptype="subscribe")
        sub = await next_matching(alice.subscribes, lambda p: True)
        r.check(sub is not None and bare(sub["from"]) == bob_jid,
                "alice: receives bob's subscription request")
        alice.send_presence(pto=bob_jid, ptype="subscribed")
        p = await next_matching(bob.presences,
                                lambda p: p["type"] == "available" and str(p["from"]) == alice.boundjid.full)
        r.check(p is not None, "bob: receives alice's presence after approval")

        ra = await alice.roster_items()
        rb = await bob.roster_items()
        r.check(ra.get(bob_jid, (None,))[0] == "both" and ra[bob_jid][1] is None,
                f"alice: bob is 'both' without ask ({ra})")
        r.check(ra.get(bob_jid, (None, None, None, None))[2:] == ("Bob", ["Friends"]),
                f"alice: bob keeps name and group ({ra})")
        r.check(rb.get(alice_jid, (None,))[0] == "both" and rb[alice_jid][1] is None,
                f"bob: alice is 'both' without ask ({rb})")

        # --- Presence with show and status -----------------------------------------------------
        drain(bob.presences)
        drain(alice.presences)
        alice.send_presence(pshow="away", pstatus="Out to lunch")
        p = await next_matching(bob.presences, lambda p: str(p["from"]) == alice.boundjid.full)
        r.check(p is not None and p["show"] == "away" and p["status"] == "Out to lunch",
                "bob: sees alice away with her status"
                + ("" if p is None else f" (show={p['show']!r} status={p['status']!r})"))
        bob.send_presence(pshow="dnd", pstatus="In a meeting")
        p = await next_matching(alice.presences, lambda p: str(p["from"]) == bob.boundjid.full)
        r.check(p is not None and p["show"] == "dnd" and p["status"] == "In a meeting",
                "alice: sees bob dnd with his status"
                + ("" if p is None else f" (show={p['show']!r} status={p['status']!r})"))

        # --- Live relay both ways --------------------------------------------------------------
        drain(bob.messages)
        drain(alice.messages)
        alice.send_message(mto=bob_jid, mbody="hello bob", mtype="chat")
        m = await next_matching(bob.messages, lambda m: True)
        r.check(m is not None and m["body"] == "hello bob"
                and str(m["from"]) == alice.boundjid.full,
                "bob: receives alice's message live from her full JID")
        r.check(m is not None and not m["delay"]["stamp"], "bob: live message has no delay stamp")
        bob.send_message(mto=alice.boundjid.full, mbody="hi alice", mtype="chat")
        m = await next_matching(alice.messages, lambda m: True)
        r.check(m is not None and m["body"] == "hi alice" and str(m["from"]) == bob.boundjid.full,
                "alice: receives bob's reply live (to her full JID)")

        # --- Offline delivery -------------------------------------------------------------------
        drain(alice.presences)
        await bob.stop()
        p = await next_matching(alice.presences,
                                lambda p: p["type"] == "unavailable" and str(p["from"]) == bob.boundjid.full)
        r.check(p is not None, "alice: sees bob go unavailable")
        bodies = [f"offline message {i}" for i in range(1, 4)]
        sent_at = time.time()
        for b in bodies:
            alice.send_message(mto=bob_jid, mbody=b, mtype="chat")
        # An error here would mean the messages were bounced instead of stored.
        errs = await collect(alice.message_errors, QUIET)
        r.check(not errs, "alice: messages to offline bob are not bounced")

        bob2 = Client(bob_jid + "/laptop", bob_pw)
        clients.append(bob2)
        outcome = await bob2.start(port)
        r.check(outcome == "session", f"bob: logs in again ({outcome})")
        rb = await bob2.roster_items()
        r.check(rb.get(alice_jid, (None,))[0] == "both", f"bob: roster at login has alice 'both' ({rb})")
        bob2.send_presence()
        got = []
        for _ in bodies:
            m = await next_matching(bob2.messages, lambda m: True)
            if m is None:
                break
            got.append(m)
        r.check([m["body"] for m in got] == bodies,
                f"bob: offline messages arrive in the order sent ({[m['body'] for m in got]})")
        r.check(all(bare(m["from"]) == alice_jid for m in got) and len(got) == 3,
                "bob: offline messages are from alice")
        stamps_ok = len(got) == 3
        for m in got:
            stamp = m["delay"]["stamp"]
            if not stamp or abs(stamp.timestamp() - sent_at) > 30:
                stamps_ok = False
        r.check(stamps_ok, "bob: each offline message has a XEP-0203 delay stamp near the send time"
                + "".join(f" [{m['delay']['stamp']}, from={m['delay']['from']}]" for m in got))
        extra = await collect(bob2.messages, QUIET)
        r.check(not extra, f"bob: no duplicate offline messages ({[m['body'] for m in extra]})")
        await bob2.stop()

        bob3 = Client(bob_jid + "/laptop", bob_pw)
        clients.append(bob3)
        outcome = await bob3.start(port)
        r.check(outcome == "session", f"bob: logs in a third time ({outcome})")
        bob3.send_presence()
        extra = await collect(bob3.messages, 2.0)
        r.check(not extra, "bob: offline messages were deleted after delivery "
                f"({[m['body'] for m in extra]})")

        # Roster at login for alice too, from a second resource.
        alice2 = Client(alice_jid + "/tablet", alice_pw)
        clients.append(alice2)
        outcome = await alice2.start(port)
        if r.check(outcome == "session", f"alice: second resource logs in ({outcome})"):
            ra = await alice2.roster_items()
            r.check(ra.get(bob_jid) == ("both", None, "Bob", ["Friends"]),
                    f"alice: roster at login has bob 'both', name and group ({ra})")
            await alice2.stop()

        # --- Message to an account that does not exist ------------------------------------------
        drain(alice.message_errors)
        alice.send_message(mto=f"nobody@{DOMAIN}", mbody="anyone there?", mtype="chat")
        e = await next_matching(alice.message_errors, lambda m: True)
        r.check(e is not None and e["error"]["condition"] == "service-unavailable"
                and bare(e["from"]) == f"nobody@{DOMAIN}",
                "alice: message to a missing account bounces with service-unavailable"
                + ("" if e is None else f" (condition={e['error']['condition']!r})"))

        await bob3.stop()
        await alice.stop()
    finally:
        for c in clients:
            if c.transport:
                c.abort()


def main():
    args = kabartest.parse_args()
    r = kabartest.Results("slixmpp")
    slixtest.quiet_logging()
    with kabartest.Kabard(args) as kd:
        with slixtest.Loop(r, TOTAL) as lp:
            lp.run(scenario(r, kd))
        r.check(kd.alive(), "kabard still running at the end")
    r.finish()


if __name__ == "__main__":
    main()
