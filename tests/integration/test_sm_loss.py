"""Loss test for stream management (XEP-0198): a raw client with stream management receives 1,000
messages from another client while its TCP connection is cut (reset, no stream close) at random
points (fixed seed) several times.

1. Resumption (kabard with four shards, the sender sending from its own thread throughout):
   after each cut it resumes with <resume h/>; every message must arrive exactly once, in
   order.
2. The window expires (resume_timeout = 1 s): after each cut the session times out; the client
   logs in afresh and what it had not acknowledged comes from offline storage. Every message must
   arrive exactly once, in order.
Each part prints its counts."""
import os
import random
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import NS_CLIENT, Conn, login, online, q  # noqa: E402

NS_SM = "urn:xmpp:sm:3"
STANZAS = {q(NS_CLIENT, n) for n in ("message", "presence", "iq")}
N = 1000
AHEAD = 200  # the sender keeps at most this many messages beyond what was received
SEED = 198

R = kabartest.Results("sm_loss")
PW = {"alice": "alice-pw", "bob": "bob-pw"}


class Receiver:
    def __init__(self, port, expire):
        self.port = port
        self.expire = expire
        self.received = []
        self.h = 0
        self.sm_id = None
        self.cuts = 0
        self.resumes = 0
        self.relogins = 0
        self.c = None

    def connect_fresh(self):
        self.c = login(self.port, "alice", PW["alice"], "loss")
        self.c.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        el = self.c.expect(q(NS_SM, "enabled"))
        self.sm_id = el.get("id")
        self.h = 0
        self.c.presence()

    def handle(self, el, record=True):
        """Counts a stanza; records a message body; answers <r/>."""
        if el.tag in STANZAS:
            if not record:
                return None
            self.h += 1
            if el.tag == q(NS_CLIENT, "message"):
                body = el.findtext(q(NS_CLIENT, "body")) or ""
                if body.startswith("m"):
                    self.received.append(int(body[1:]))
                    return True
        elif el.tag == q(NS_SM, "r"):
            self.c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.h))
        return None

    def next(self, timeout=20):
        return self.c.wait_for(lambda e: True, timeout, what="a stanza")

    def cut(self, bob):
        self.cuts += 1
        if self.expire:
            # Acknowledge what was handled and wait until the server has taken the ack (its <a/>
            # answers our <r/> in order); what arrives meanwhile is not handled (nor counted):
            # it is the server's to store.
            self.c.send("<a xmlns='%s' h='%d'/><r xmlns='%s'/>" % (NS_SM, self.h, NS_SM))
            while True:
                el = self.next()
                if el.tag == q(NS_SM, "a"):
                    break
        self.c.abort()
        if not self.expire:
            self.resumes += 1
            c = Conn(self.port)
            c.open_stream()
            c.starttls()
            c.authenticate("alice", PW["alice"])
            c.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, self.sm_id, self.h))
            el = c.wait_for(lambda e: e.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")),
                            what="resumed")
            if el.tag != q(NS_SM, "resumed"):
                raise RuntimeError("resumption failed")
            self.c = c
            return
        # The window passes: the contact sees the resource go unavailable (after its
        # unacknowledged messages were stored).
        bob.expect_presence(type="unavailable", from_="alice@localhost/loss", timeout=20)
        self.relogins += 1
        self.connect_fresh()


def run(k, expire, cuts):
    rng = random.Random(SEED + (1 if expire else 0))
    points = sorted(rng.sample(range(20, N - 20), cuts))
    bob = online(k.port, "bob", PW["bob"], "loss")
    r = Receiver(k.port, expire)
    r.connect_fresh()
    # Mutual subscription: bob sees alice's resource go unavailable when its window passes.
    r.c.send("<presence to='bob@localhost' type='subscribe'/>")
    bob.expect_presence(type="subscribe")
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
    r.c.send("<presence to='bob@localhost' type='subscribed'/>")
    bob.drain(0.2)
    if not expire:
        return run_concurrent(bob, r, points)
    sent = 0
    draining = False  # after a fresh login: the stored messages first, then new ones
    while len(r.received) < N:
        if not draining:
            while sent < N and sent - len(r.received) < AHEAD:
                bob.send("<message to='alice@localhost/loss' type='chat'><body>m%d</body>"
                         "</message>" % sent)
                sent += 1
        got = r.handle(r.next())
        if draining and len(r.received) >= sent:
            draining = False
        # No cut while stored messages are being delivered: kabard deletes a delivered batch of
        # offline messages only once the ack covers the whole batch (modules/offline), so a
        # batch cut halfway would all come again at the next login.
        if got and points and not draining and len(r.received) >= points[0]:
            points.pop(0)
            relogins = r.relogins
            r.cut(bob)
            draining = r.relogins != relogins
    # Anything more would be a duplicate.
    for el in r.c.drain(0.5):
        r.handle(el)
    r.c.close()
    bob.close()
    return r


def run_concurrent(bob, r, points):
    """Resumption: the sender keeps sending from its own thread (at most AHEAD messages beyond
    what was received), so messages reach kabard while the receiver's connection is being cut,
    detached, resumed and handed over."""
    cond = threading.Condition()
    state = {"sent": 0, "failed": None}

    def sender():
        try:
            while state["sent"] < N:
                with cond:
                    cond.wait_for(lambda: state["sent"] - len(r.received) < AHEAD, timeout=30)
                bob.send("<message to='alice@localhost/loss' type='chat'><body>m%d</body>"
                         "</message>" % state["sent"])
                state["sent"] += 1
        except Exception as e:  # noqa: BLE001
            state["failed"] = e

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    while len(r.received) < N:
        got = r.handle(r.next())
        if got:
            with cond:
                cond.notify()
        if got and points and len(r.received) >= points[0]:
            points.pop(0)
            r.cut(bob)
    t.join(timeout=30)
    if state["failed"] is not None:
        raise state["failed"]
    for el in r.c.drain(0.5):
        r.handle(el)
    r.c.close()
    bob.close()
    return r


def check(r, what):
    dups = len(r.received) - len(set(r.received))
    missing = sorted(set(range(N)) - set(r.received))
    in_order = r.received == sorted(r.received)
    print("%s: received %d messages (%d distinct), %d duplicates, %d missing, cuts %d, "
          "resumptions %d, fresh logins %d, in order: %s"
          % (what, len(r.received), len(set(r.received)), dups, len(missing), r.cuts, r.resumes,
             r.relogins, in_order), flush=True)
    R.check(r.received == list(range(N)),
            "%s: all %d messages exactly once, in order" % (what, N))


def main():
    args = kabartest.parse_args()

    @R.section
    def resumption():
        # Four shards: the new connection and the old session are often on different ones.
        with kabartest.Kabard(args, extra_flags=["--threads", "4"]) as k:
            for user, pw in PW.items():
                k.add_user(user, pw)
            r = run(k, expire=False, cuts=6)
            check(r, "resumed after each cut")
            R.check(r.cuts == 6 and r.resumes == 6, "6 cuts, 6 resumptions")

    @R.section
    def expiry():
        with kabartest.Kabard(args, config="[sm]\nresume_timeout = 1\n"
                              "[limits]\noffline_per_sender = 1000\n") as k:
            for user, pw in PW.items():
                k.add_user(user, pw)
            r = run(k, expire=True, cuts=3)
            check(r, "window expired after each cut")
            R.check(r.cuts == 3 and r.relogins == 3, "3 cuts, 3 fresh logins")

    resumption()
    expiry()
    R.finish()


if __name__ == "__main__":
    main()
