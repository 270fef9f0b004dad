"""Offline delivery that cannot lock anyone out (issue 16, item 4), with raw clients.

What a login hands the client at once used to pass kabard's 4 MiB output cap: 900 offline messages
of 5 KB, 20 of 244 KiB, or 30 subscription requests of 250 KiB from 30 accounts cut the owner's
connection at every login, and nothing was deleted. In each case here the owner logs in, receives
everything, stays connected (a ping is answered afterwards), and the queue is empty afterwards
(`kabarctl user offline` shows 0). Then: one sender past its share of someone's queue gets
<resource-constraint/> (type wait); `kabarctl user offline --clear` empties a queue while kabard
runs (through its control socket) and after it stopped (on the database)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import (NS_CLIENT, NS_DELAY, NS_STANZAS, XmppError, error_condition,  # noqa: E402
                      login, online, q)

R = kabartest.Results("offline_lockout")
PW = "pw-offline"


def offline_info(k, user):
    """`kabarctl user offline USER`, parsed: {'messages': n, 'bytes': n, 'from': {jid: n}, ...}."""
    r = k.ctl("user", "offline", user, check=False)
    info = {"rc": r.returncode, "from": {}, "text": r.stdout + r.stderr}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "from":
            info["from"][parts[1]] = int(parts[2])
        elif len(parts) == 2:
            info[parts[0]] = int(parts[1]) if parts[1].isdigit() else parts[1]
    return info


def wait_queue(k, user, count, timeout=20):
    """Polls kabarctl until USER's queue holds `count` messages (what kabard stores or deletes
    is committed a moment after the stanza that caused it); returns the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        info = offline_info(k, user)
        if info.get("messages") == count or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


def barrier(c):
    """A ping answered: every stanza this client sent before it has been processed."""
    r = c.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="localhost")
    return r.get("type") == "result"


def still_connected(c):
    try:
        return barrier(c)
    except XmppError:
        return False


def receive_messages(c, count, timeout=60):
    """The bodies of the next `count` messages, in order (raises on a closed stream)."""
    bodies = []
    deadline = time.monotonic() + timeout
    while len(bodies) < count:
        el = c.wait_for(lambda e: e.tag == q(NS_CLIENT, "message"),
                        max(0.1, deadline - time.monotonic()), what="message %d" % len(bodies))
        bodies.append((el.get("id"), el.findtext(q(NS_CLIENT, "body")) or "",
                       el.find(q(NS_DELAY, "delay")) is not None))
    return bodies


def store_from(k, senders, owner, per_sender, size, tag):
    """Each sender leaves `per_sender` messages of `size` body bytes for the offline owner; ids
    are TAG-sender-i. Returns the ids in the order sent (sender by sender)."""
    ids = []
    for s in senders:
        c = login(k.port, s, PW, resource="s")
        for i in range(per_sender):
            mid = "%s-%s-%d" % (tag, s, i)
            body = (mid + ":").ljust(size, "x")
            c.send("<message to='%s@localhost' type='chat' id='%s'><body>%s</body></message>"
                   % (owner, mid, body))
            ids.append(mid)
        answered = barrier(c)
        errors = [e for e in c.queue if e.get("type") == "error"]
        R.check(answered and not errors, "%s leaves %d messages of %d bytes for %s, none bounced"
                % (s, per_sender, size, owner))
        c.close()
    return ids


def owner_receives_all(k, owner, ids, size):
    info = wait_queue(k, owner, len(ids))
    R.check(info.get("messages") == len(ids),
            "kabarctl user offline %s: %d stored before the login (%s)"
            % (owner, len(ids), info.get("messages")))
    c = online(k.port, owner, PW, resource="phone")
    try:
        got = receive_messages(c, len(ids))
        ok = True
    except XmppError as e:
        got, ok = [], False
        R.check(False, "%s receives every stored message: %s" % (owner, str(e)[:200]))
    if ok:
        R.check(sorted(g[0] for g in got) == sorted(ids),
                "%s receives all %d stored messages" % (owner, len(ids)))
        R.check(all(len(b) == size and b.startswith(i + ":") and d for i, b, d in got),
                "each whole (%d bytes of body) and stamped with <delay/>" % size)
        # Per sender, in the order sent.
        order_ok = True
        for s in {i.split("-")[1] for i in ids}:
            mine = [g[0] for g in got if g[0].split("-")[1] == s]
            order_ok = order_ok and mine == [i for i in ids if i.split("-")[1] == s]
        R.check(order_ok, "each sender's messages in the order sent")
    R.check(still_connected(c), "%s stays connected (a ping is answered afterwards)" % owner)
    info = wait_queue(k, owner, 0)
    R.check(info.get("messages") == 0 and info.get("bytes") == 0,
            "the queue is empty afterwards: kabarctl user offline %s shows 0 (%s)"
            % (owner, info.get("messages")))
    c.close()


def main():
    args = kabartest.parse_args()
    k = kabartest.Kabard(args, config="[limits]\noffline_per_sender = 100\n")
    try:
        k.start()
        senders = ["s%02d" % i for i in range(30)]
        owners = ["owner1", "owner2", "owner3", "owner4", "owner5"]
        for u in senders + owners:
            k.add_user(u, PW)

        @R.section
        def many_small_messages():
            # 900 of 5 KB (4.5 MB), from ten senders (each within its share of 100).
            ids = store_from(k, senders[:10], "owner1", 90, 5000, "a")
            owner_receives_all(k, "owner1", ids, 5000)

        @R.section
        def few_huge_messages():
            # 20 of 244 KiB (4.9 MB) from one sender; each under max_stanza_bytes (256 KiB).
            ids = store_from(k, senders[:1], "owner2", 20, 244 * 1024, "b")
            owner_receives_all(k, "owner2", ids, 244 * 1024)

        @R.section
        def many_huge_subscription_requests():
            # 30 accounts each ask owner3 for a subscription with a 250 KiB status (7.5 MB).
            status = "y" * (250 * 1024)
            for s in senders:
                c = login(k.port, s, PW, resource="r")
                c.send("<presence to='owner3@localhost' type='subscribe' id='sub-%s'>"
                       "<status>%s</status></presence>" % (s, status))
                if not barrier(c):
                    R.check(False, "%s's subscription request processed" % s)
                c.close()
            c = online(k.port, "owner3", PW, resource="phone")
            seen = set()
            try:
                while len(seen) < len(senders):
                    p = c.wait_for(lambda e: e.tag == q(NS_CLIENT, "presence")
                                   and e.get("type") == "subscribe", 60,
                                   what="subscription request %d" % len(seen))
                    if p.findtext(q(NS_CLIENT, "status")) == status:
                        seen.add(p.get("from").split("@")[0])
            except XmppError as e:
                R.check(False, "owner3 receives every request: %s" % str(e)[:200])
            R.check(seen == set(senders),
                    "owner3 receives all 30 subscription requests of 250 KiB (%d)" % len(seen))
            R.check(still_connected(c), "owner3 stays connected")
            c.close()
            # And again at the next login (still pending: RFC 6121 §3.1.3), all of them.
            c = online(k.port, "owner3", PW, resource="tablet")
            again = 0
            try:
                while again < len(senders):
                    c.wait_for(lambda e: e.tag == q(NS_CLIENT, "presence")
                               and e.get("type") == "subscribe", 60, what="request again")
                    again += 1
            except XmppError:
                pass
            R.check(again == len(senders) and still_connected(c),
                    "the next login gets them all again and stays connected (%d)" % again)
            c.close()

        @R.section
        def per_sender_limit():
            # The share configured above: 100 messages from one sender per recipient.
            c = login(k.port, "s00", PW, resource="flood")
            for i in range(101):
                c.send("<message to='owner4@localhost' type='chat' id='f%d'><body>%d</body>"
                       "</message>" % (i, i))
            try:
                err = c.wait_for(lambda e: e.tag == q(NS_CLIENT, "message")
                                 and e.get("type") == "error", 10, what="bounce")
            except XmppError:
                err = None
            R.check(err is not None and err.get("id") == "f100",
                    "the 101st message is bounced (%s)" % (err.get("id") if err is not None
                                                          else None))
            e = err.find(q(NS_CLIENT, "error")) if err is not None else None
            R.check(e is not None and e.get("type") == "wait"
                    and error_condition(err) == "resource-constraint"
                    and e.find(q(NS_STANZAS, "resource-constraint")) is not None,
                    "with <resource-constraint/>, type wait (RFC 6120 §8.3.3.18)")
            R.check(barrier(c) and not [x for x in c.queue if x.get("type") == "error"],
                    "and only that one")
            c.close()
            # Another sender still has room.
            c = login(k.port, "s01", PW, resource="r")
            c.send("<message to='owner4@localhost' type='chat' id='other'><body>hi</body>"
                   "</message>")
            R.check(barrier(c) and not [x for x in c.queue if x.get("type") == "error"],
                    "another sender's message to owner4 is still stored")
            c.close()
            info = wait_queue(k, "owner4", 101)
            R.check(info.get("messages") == 101
                    and info["from"] == {"s00@localhost": 100, "s01@localhost": 1},
                    "kabarctl user offline owner4: 101 messages, per sender 100 and 1 (%s)"
                    % info["from"])
            R.check(info.get("bytes", 0) > 0 and "oldest" in info and "newest" in info,
                    "with the bytes and the oldest and newest stamps (%s)"
                    % info["text"].splitlines()[:5])

        @R.section
        def clear_while_running():
            ids = store_from(k, senders[:2], "owner5", 10, 100, "c")
            wait_queue(k, "owner5", len(ids))
            r = k.ctl("user", "offline", "owner5", "--clear", check=False)
            R.check(r.returncode == 0 and "cleared 20" in r.stdout and "running kabard" in r.stdout,
                    "kabarctl user offline owner5 --clear: through the running kabard (%s%s)"
                    % (r.stdout.strip(), r.stderr.strip()))
            R.check(offline_info(k, "owner5").get("messages") == 0, "owner5's queue is empty")
            c = online(k.port, "owner5", PW, resource="phone")
            R.check(still_connected(c) and not [x for x in c.queue
                                                if x.tag == q(NS_CLIENT, "message")],
                    "owner5 logs in to no message")
            c.close()
            r = k.ctl("user", "offline", "nobody", check=False)
            R.check(r.returncode == 1 and "no such user" in r.stderr,
                    "kabarctl user offline nobody: exit 1, no such user")

        many_small_messages()
        few_huge_messages()
        many_huge_subscription_requests()
        per_sender_limit()
        clear_while_running()

        R.check(k.stop() == 0, "kabard stops cleanly")
        # Without kabard: read and cleared on the database file.
        info = offline_info(k, "owner4")
        R.check(info.get("messages") == 101, "kabarctl user offline without kabard: 101 for owner4")
        r = k.ctl("user", "offline", "owner4", "--clear", check=False)
        R.check(r.returncode == 0 and "cleared 101" in r.stdout and "running" not in r.stdout,
                "kabarctl user offline owner4 --clear without kabard (%s%s)"
                % (r.stdout.strip(), r.stderr.strip()))
        R.check(offline_info(k, "owner4").get("messages") == 0, "owner4's queue is empty")
    finally:
        if R.failed:
            sys.stderr.write(k.read_log()[-4000:])
        k.cleanup()
    R.finish()


if __name__ == "__main__":
    main()
