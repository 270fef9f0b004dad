"""kabard with several I/O shards (--threads 4): connections spread over the shards, and
everything that crosses from one shard to another still works: messages to bare and full JIDs,
presence broadcasts and probes, roster pushes to the other resources of an account, a resource
replaced by a new connection on another shard (<conflict/>), IQs to the components that live on
shard 0, a burst of messages from many senders (none lost, each sender's order kept), and
shutdown of every shard on SIGTERM."""
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import (NS_CLIENT, NS_DISCO_INFO, NS_ROSTER, Conn, StreamClosed, login,  # noqa: E402
                      online, q, tostr)

R = kabartest.Results("shards")
SHARDS = 4
USERS = ["u%d" % i for i in range(4)]
PW = "shard-pw"


def shard_of(k, jid):
    """The shard a full JID was bound on, from kabard's log line 'bound JID (shard N)'."""
    m = None
    for m in re.finditer(r"bound %s \(shard (\d+)\)" % re.escape(jid), k.read_log()):
        pass
    return int(m.group(1)) if m else None


def befriend(k):
    """Mutual subscriptions between all users by pre-approval (RFC 6121 §3.4), then 'both'."""
    conns = {u: online(k.port, u, PW, "setup") for u in USERS}
    for a in USERS:
        for b in USERS:
            if a != b:
                conns[a].send("<presence to='%s@localhost' type='subscribed'/>" % b)
    time.sleep(0.3)
    for a in USERS:
        for b in USERS:
            if a != b:
                conns[a].send("<presence to='%s@localhost' type='subscribe'/>" % b)
    # Wait until every roster says 'both' for every other user.
    deadline = time.time() + 15
    for a in USERS:
        while True:
            r = conns[a].iq("get", "<query xmlns='%s'/>" % NS_ROSTER)
            items = {i.get("jid"): i.get("subscription")
                     for i in r.find(q(NS_ROSTER, "query")).findall(q(NS_ROSTER, "item"))}
            if all(items.get("%s@localhost" % b) == "both" for b in USERS if b != a):
                break
            if time.time() > deadline:
                raise RuntimeError("subscriptions of %s incomplete: %s" % (a, items))
            time.sleep(0.1)
    for c in conns.values():
        c.close()
    time.sleep(0.3)


section = R.section


@section
def spread_and_threads(k, conns):
    log = k.read_log()
    R.check("%d I/O shards" % SHARDS in log, "kabard reports %d I/O shards" % SHARDS)
    tasks = os.listdir("/proc/%d/task" % k.proc.pid)
    R.check(len(tasks) >= SHARDS + 1, "kabard runs at least %d threads (%d)" % (SHARDS + 1, len(tasks)))
    shards = {shard_of(k, c.jid) for c in conns.values()}
    R.check(shards == set(range(SHARDS)), "the connections landed on every shard (%s)" % sorted(
        s for s in shards if s is not None))
    for u in USERS:
        mine = {shard_of(k, conns[(u, r)].jid) for r in ("a", "b", "c")}
        R.check(len(mine) >= 2, "%s's three resources live on more than one shard (%s)" % (u, mine))


@section
def messages_across_shards(k, conns):
    # To a bare JID: every available resource with the highest priority (all at 0) gets it.
    for (u, r), c in conns.items():
        if u != "u0":
            c.message("u0@localhost", "bare from %s/%s" % (u, r))
    senders = sorted(key for key in conns if key[0] != "u0")
    for r in ("a", "b", "c"):
        c = conns[("u0", r)]
        for (x, y) in senders:
            m = c.expect_message("bare from %s/%s" % (x, y))
            if m.get("from") != "%s@localhost/%s" % (x, y):
                R.check(False, "from of %s" % tostr(m))
        R.check(True, "u0/%s (shard %s) got the %d messages to u0's bare JID" % (
            r, shard_of(k, c.jid), len(senders)))
    # To a full JID: that resource only, wherever it lives.
    letters = ("a", "b", "c")
    nxt = {}
    for i, u in enumerate(USERS):
        for j, r in enumerate(letters):
            nxt[(u, r)] = (USERS[(i + 1) % len(USERS)], letters[(j + 1) % len(letters)])
    for key, c in conns.items():
        c.message(conns[nxt[key]].jid, "full from %s/%s" % key)
    for key, target in nxt.items():
        m = conns[target].expect_message("full from %s/%s" % key)
        R.check(m.get("from") == conns[key].jid, "%s/%s (shard %s) -> %s/%s (shard %s)" % (
            key + (shard_of(k, conns[key].jid),) + target + (shard_of(k, conns[target].jid),)))


@section
def presence_across_shards(k, conns):
    # A new resource of u3 comes online: every resource of the others hears it, whatever shard.
    c = online(k.port, "u3", PW, "late")
    got_probe_answers = set()
    deadline = time.time() + 10
    want = {"%s@localhost/%s" % (u, r) for u in USERS for r in ("a", "b", "c")} - {
        "u3@localhost/late"}
    while got_probe_answers != want and time.time() < deadline:
        try:
            p = c.expect_presence(timeout=max(0.1, deadline - time.time()))
        except Exception:  # noqa: BLE001
            break
        if p.get("type") is None and p.get("from") != c.jid:  # its own comes back too (§4.2.2)
            got_probe_answers.add(p.get("from"))
    R.check(got_probe_answers == want,
            "the new resource got the current presence of all %d other resources (missing %s)" % (
                len(want), sorted(want - got_probe_answers)))
    for (u, r), other in conns.items():
        p = other.expect_presence(**{"from": "u3@localhost/late"})
        R.check(p.get("type") is None, "%s/%s saw u3/late come online" % (u, r))
    # It goes away abruptly: unavailable to everyone.
    c.abort()
    for (u, r), other in conns.items():
        p = other.expect_presence(**{"from": "u3@localhost/late", "type": "unavailable"})
        R.check(p is not None, "%s/%s saw u3/late go unavailable" % (u, r))


@section
def roster_push_across_shards(k, conns):
    conns[("u1", "a")].iq("set", "<query xmlns='%s'><item jid='stranger@localhost' name='S'/>"
                          "</query>" % NS_ROSTER)
    for r in ("a", "b", "c"):
        c = conns[("u1", r)]
        el = c.wait_for(lambda e: e.tag == q(NS_CLIENT, "iq") and e.get("type") == "set"
                        and e.find(q(NS_ROSTER, "query")) is not None
                        and e.find(q(NS_ROSTER, "query")).find(q(NS_ROSTER, "item")).get("jid")
                        == "stranger@localhost", what="roster push")
        c.send("<iq type='result' id='%s'/>" % el.get("id"))
        R.check(True, "u1/%s (shard %s) got the roster push" % (r, shard_of(k, c.jid)))


@section
def conflict_across_shards(k, conns):
    old = conns[("u2", "b")]
    old_shard = shard_of(k, old.jid)
    # Connect until the new connection lands on another shard than the old one (round robin).
    new = None
    for _ in range(SHARDS):
        cand = login(k.port, "u2", PW, "b")
        if shard_of(k, cand.jid) != old_shard:
            new = cand
            break
        old = cand  # it replaced the previous one on the same shard; keep going
        conns[("u2", "b")] = cand
    R.check(new is not None, "a new connection for u2/b landed on another shard")
    err = old.stream_error()
    R.check(err == "conflict", "the old u2/b got <conflict/> (%s)" % err)
    watcher = conns[("u0", "a")]
    watcher.expect_presence(**{"from": "u2@localhost/b", "type": "unavailable"})
    R.check(True, "contacts saw the replaced resource go unavailable")
    new.iq("get", "<query xmlns='%s'/>" % NS_ROSTER)
    new.presence()
    p = watcher.expect_presence(**{"from": "u2@localhost/b"})
    R.check(p.get("type") is None, "then available again from the new connection")
    watcher.message("u2@localhost/b", "to the new one")
    m = new.expect_message("to the new one")
    R.check(m is not None, "a message to u2/b reaches the new connection")
    conns[("u2", "b")] = new


@section
def components_from_every_shard(k, conns):
    for (u, r), c in list(conns.items())[:SHARDS * 2]:
        res = c.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="proxy.localhost")
        R.check(res.get("type") == "result", "disco#info of proxy.localhost from shard %s" % (
            shard_of(k, c.jid)))


@section
def burst_keeps_order(k, conns):
    # Every connection sends N numbered messages to one receiver's full JID; each sender's
    # numbers arrive complete and in order.
    n = 150
    receiver = conns[("u0", "c")]
    senders = [(key, c) for key, c in conns.items() if key[0] != "u0"]
    got = {}
    done = threading.Event()
    total = n * len(senders)

    def reader():
        count = 0
        while count < total:
            el = receiver.wait_for(lambda e: e.tag == q(NS_CLIENT, "message"), timeout=30,
                                   what="burst message")
            body = el.findtext(q(NS_CLIENT, "body")) or ""
            if not body.startswith("burst "):
                continue
            _, who, i = body.split(" ")
            got.setdefault(who, []).append(int(i))
            count += 1
        done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    for i in range(n):
        for (u, r), c in senders:
            c.send("<message to='%s' type='chat'><body>burst %s/%s %d</body></message>" % (
                receiver.jid, u, r, i))
    done.wait(60)
    R.check(sum(len(v) for v in got.values()) == total,
            "all %d messages of the burst arrived (%d)" % (total, sum(len(v) for v in got.values())))
    R.check(all(v == list(range(n)) for v in got.values()),
            "each of the %d senders' messages arrived in the order sent" % len(senders))


def main():
    args = kabartest.parse_args()
    k = kabartest.Kabard(args, extra_flags=["--threads", str(SHARDS), "--proxy65",
                                            "127.0.0.1:%d" % kabartest.free_port()])
    with k:
        for u in USERS:
            k.add_user(u, PW)
        befriend(k)
        conns = {}
        spares = []
        for r in ("a", "b", "c"):
            for u in USERS:
                conns[(u, r)] = online(k.port, u, PW, r)
            # One more connection per round shifts the round robin, so that each account's
            # resources land on different shards.
            spares.append(Conn(k.port))
            spares[-1].open_stream()
        time.sleep(0.5)
        for c in conns.values():
            c.drain(0.2)
        spread_and_threads(k, conns)
        messages_across_shards(k, conns)
        for c in conns.values():
            c.drain(0.2)
        presence_across_shards(k, conns)
        roster_push_across_shards(k, conns)
        for c in conns.values():
            c.drain(0.2)
        conflict_across_shards(k, conns)
        components_from_every_shard(k, conns)
        for c in conns.values():
            c.drain(0.3)
        burst_keeps_order(k, conns)
        # SIGTERM: every shard closes its connections with system-shutdown, kabard exits 0.
        pid = k.proc.pid
        t0 = time.time()
        rc = k.stop(timeout=15)
        R.check(rc == 0, "kabard exited 0 on SIGTERM with %d shards (%d)" % (SHARDS, rc))
        R.check(time.time() - t0 < 10, "and within 10 s (%.1f s)" % (time.time() - t0))
        closed = 0
        for c in conns.values():
            try:
                if c.stream_error(timeout=2) == "system-shutdown":
                    closed += 1
            except Exception as e:  # noqa: BLE001
                print("no system-shutdown on %s: %r" % (c.jid, e))
        R.check(closed == len(conns), "every connection got <system-shutdown/> (%d of %d)" % (
            closed, len(conns)))
        del pid
    R.finish()


if __name__ == "__main__":
    main()
