"""`kabarctl archive` against a real kabard: messages between alice, bob and carol are archived;
`archive count` (whole, --with a bare and a full JID) and `archive show` (--json: times, bodies,
directions, the ids the recipient saw as stanza-ids; text: one terminal-safe line each; --last)
read them while kabard runs. `archive clear` while kabard runs goes through its control socket
(a message archived a moment before goes with the rest), and afterwards new messages archive
fine: kabarctl's count and a MAM query's RSM count (whole and with one correspondent) agree.
`archive expire --older-than` deletes the messages stamped before the cut (some backdated in the
database) through kabard, and without kabard from the database, as `archive clear` does; a
kabard started again archives consistently on the cleared archive. Usage errors exit 2, an
unknown user or a bad JID exit 1.

Run: /usr/bin/python3 test_kabarctl_archive.py --kabard PATH --kabarctl PATH
"""
import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import NS_CLIENT, NS_PING, online, q  # noqa: E402

R = kabartest.Results("kabarctl_archive")
PW = "archive-pw"
NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"
NS_RSM = "http://jabber.org/protocol/rsm"
DAY_MS = 24 * 3600 * 1000
# Text a peer may send that must not reach a terminal raw: a newline and a tab, a C1 CSI
# (U+009B) and a right-to-left override (U+202E).
HOSTILE = "line1\nline2\tcol \u009b2J evil\u202egpj.exe"


def out(r):
    return (r.stdout + r.stderr).strip()[:300]


def count(k, user, *more):
    r = k.ctl("archive", "count", user, *more, check=False)
    return int(r.stdout) if r.returncode == 0 and r.stdout.strip().isdigit() else -1


def wait_count(k, user, want, timeout=10):
    """kabard writes its archive in group commits (within a second): polls until it is there."""
    deadline = time.monotonic() + timeout
    while True:
        n = count(k, user)
        if n == want or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def show_json(k, user, *more):
    r = k.ctl("archive", "show", user, "--json", *more, check=False)
    if r.returncode != 0:
        return None
    return [json.loads(line) for line in r.stdout.splitlines()]


def barrier(c):
    """Everything c sent before is handled once kabard answers a ping sent after it."""
    r = c.iq("get", "<ping xmlns='%s'/>" % NS_PING, to="localhost")
    return r.get("type") == "result"


def mam_query(c, with_jid=None):
    """A MAM query of c's own archive: (bodies, the RSM count)."""
    qid = c.next_id("mam")
    form = ""
    if with_jid:
        form = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                "<value>%s</value></field><field var='with'><value>%s</value></field></x>"
                % (NS_MAM, with_jid))
    r = c.iq("set", "<query xmlns='%s' queryid='%s'>%s<set xmlns='%s'><max>50</max></set>"
             "</query>" % (NS_MAM, qid, form, NS_RSM))
    bodies = []
    for el in list(c.queue):
        res = el.find(q(NS_MAM, "result"))
        if el.tag == q(NS_CLIENT, "message") and res is not None and res.get("queryid") == qid:
            c.queue.remove(el)
            fwd = res.find("{urn:xmpp:forward:0}forwarded")
            m = fwd.find(q(NS_CLIENT, "message")) if fwd is not None else None
            bodies.append(m.findtext(q(NS_CLIENT, "body")) if m is not None else None)
    fin = r.find(q(NS_MAM, "fin"))
    total = fin.findtext("{%s}set/{%s}count" % (NS_RSM, NS_RSM)) if fin is not None else None
    return bodies, int(total) if total is not None and total.isdigit() else -1


def backdate(k, rows, days):
    """Stamps the oldest `rows` archived messages (in the order written) `days` days earlier.
    Only the stamps change: nothing kabard keeps in memory depends on them."""
    db = sqlite3.connect(os.path.join(k.data_dir, "kabar.db"), timeout=10)
    try:
        db.execute("UPDATE archive_msg SET stamp_ms = stamp_ms - ? WHERE seq IN "
                   "(SELECT seq FROM archive_msg ORDER BY seq LIMIT ?)", (days * DAY_MS, rows))
        db.commit()
    finally:
        db.close()


def total_archived(k):
    return kabartest.sqlite_count(k, "SELECT COUNT(*) FROM archive_msg")


def main():
    args = kabartest.parse_args()
    k = kabartest.Kabard(args)
    try:
        k.start()
        for u in ("alice", "bob", "carol"):
            k.add_user(u, PW)
        alice = online(k.port, "alice", PW, resource="desk")
        bob = online(k.port, "bob", PW, resource="phone")
        sent = []  # (direction for alice, correspondent, body)
        bob_ids = []  # the stanza-ids bob's archive gave the messages bob received

        @R.section
        def archive_and_read():
            for i in range(3):
                body = HOSTILE if i == 1 else "to bob %d" % i
                alice.message("bob@localhost", body)
                m = bob.expect_message(body=body, timeout=10)
                sid = m.find(q(NS_SID, "stanza-id"))
                bob_ids.append(sid.get("id") if sid is not None else None)
                sent.append(("out", "bob@localhost", body))
            for i in range(2):
                body = "to alice %d" % i
                bob.message("alice@localhost/desk", body)
                alice.expect_message(body=body, timeout=10)
                sent.append(("in", "bob@localhost", body))
            alice.message("carol@localhost", "to carol, offline")  # archived for both
            sent.append(("out", "carol@localhost", "to carol, offline"))
            R.check(barrier(alice) and barrier(bob), "the messages are handled")

            R.check(wait_count(k, "alice", 6) == 6, "archive count alice: 6 while kabard runs")
            R.check(wait_count(k, "bob", 5) == 5, "archive count bob: 5")
            R.check(wait_count(k, "carol", 1) == 1, "archive count carol: 1 (sent while offline)")
            R.check(count(k, "alice", "--with", "bob@localhost") == 5,
                    "archive count alice --with bob@localhost: 5")
            R.check(count(k, "alice", "--with", "carol@localhost") == 1,
                    "archive count alice --with carol@localhost: 1")
            R.check(count(k, "alice", "--with", "bob@localhost/phone") == 2,
                    "archive count alice --with bob@localhost/phone: the 2 from that resource")
            R.check(count(k, "alice@localhost") == 6, "USER may be a JID (alice@localhost)")

            got = show_json(k, "alice")
            R.check(got is not None and len(got) == 6, "archive show alice --json: 6 lines (%s)"
                    % (len(got) if got is not None else None))
            if got is not None and len(got) == 6:
                R.check([(g["direction"], g["with"], g["body"]) for g in got] == sent,
                        "oldest first, with each one's direction, correspondent and exact body")
                times = [g["time"] for g in got]
                R.check(all(len(t) == 24 and t.endswith("Z") and t[10] == "T" for t in times)
                        and times == sorted(times), "times are ISO 8601 UTC, in order (%s)"
                        % times[0])
                R.check(len({g["id"] for g in got}) == 6, "each with its archive id")
            bgot = show_json(k, "bob")
            R.check(bgot is not None and [g["id"] for g in bgot if g["direction"] == "in"]
                    == bob_ids and None not in bob_ids,
                    "archive show bob --json: the ids of the received ones are the stanza-ids bob "
                    "saw")
            last = show_json(k, "alice", "--last", "2")
            R.check(last is not None and [g["body"] for g in last]
                    == ["to alice 1", "to carol, offline"],
                    "--last 2: the newest two, oldest first (%s)" % last)
            withc = show_json(k, "alice", "--with", "carol@localhost")
            R.check(withc is not None and [g["body"] for g in withc] == ["to carol, offline"],
                    "--with carol@localhost: only that conversation")

            r = k.ctl("archive", "show", "alice", check=False)
            lines = r.stdout.splitlines()
            R.check(r.returncode == 0 and len(lines) == 6, "archive show alice: one line each (%s)"
                    % out(r))
            if len(lines) == 6:
                R.check(lines[0].split()[1:] == ["out", "bob@localhost", "to", "bob", "0"]
                        and lines[3].split()[1:3] == ["in", "bob@localhost"],
                        "a line is time, direction, correspondent, body: %r" % lines[0])
                R.check("\u009b" not in r.stdout and "\u202e" not in r.stdout
                        and "\t" not in r.stdout
                        and "line1\\nline2\\tcol \\u009b2J evil\\u202egpj.exe" in lines[1],
                        "control and bidi characters are shown escaped: %r" % lines[1])

        @R.section
        def clear_while_running():
            # A message archived just before the clear (still in kabard's group commit) goes too.
            alice.message("bob@localhost", "just before the clear")
            bob.expect_message(body="just before the clear", timeout=10)
            R.check(barrier(alice), "the last message is handled")
            r = k.ctl("archive", "clear", "alice", check=False)
            R.check(r.returncode == 0 and "cleared 7 " in r.stdout
                    and "running kabard" in r.stdout,
                    "archive clear alice: 7 through the running kabard (%s)" % out(r))
            R.check(count(k, "alice") == 0, "alice's archive is empty")
            time.sleep(1.5)  # past a group commit: nothing of alice's comes back
            R.check(count(k, "alice") == 0, "and stays empty")
            R.check(wait_count(k, "bob", 6) == 6, "bob's archive is untouched (6)")
            # New messages archive fine, and kabard's counts (from its archive places) agree.
            alice.message("bob@localhost", "after the clear 1")
            bob.expect_message(body="after the clear 1", timeout=10)
            bob.message("alice@localhost", "after the clear 2")
            alice.expect_message(body="after the clear 2", timeout=10)
            R.check(barrier(alice) and barrier(bob), "the new messages are handled")
            R.check(wait_count(k, "alice", 2) == 2, "archive count alice: 2 after the clear")
            bodies, total = mam_query(alice)
            R.check(bodies == ["after the clear 1", "after the clear 2"] and total == 2,
                    "a MAM query of alice's archive: the 2 new ones, RSM count 2 (%s, %s)"
                    % (bodies, total))
            bodies, total = mam_query(alice, "bob@localhost")
            R.check(len(bodies) == 2 and total == 2,
                    "with bob@localhost: 2, RSM count 2 (%s, %s)" % (bodies, total))
            r = k.ctl("archive", "clear", "nobody", check=False)
            R.check(r.returncode == 1 and "no such user" in r.stderr,
                    "archive clear nobody: exit 1, no such user (%s)" % out(r))

        @R.section
        def expire_while_running():
            before = total_archived(k)
            backdate(k, 4, 40)
            r = k.ctl("archive", "expire", "--older-than", "30", check=False)
            R.check(r.returncode == 0 and "deleted 4 " in r.stdout and "30 days" in r.stdout
                    and "running kabard" in r.stdout,
                    "archive expire --older-than 30: the 4 backdated, through kabard (%s)" % out(r))
            R.check(total_archived(k) == before - 4, "4 fewer in the database")
            r = k.ctl("archive", "expire", "--older-than", "30", check=False)
            R.check(r.returncode == 0 and "deleted 0 " in r.stdout, "again: 0 (%s)" % out(r))
            alice.message("bob@localhost", "after the expiry")
            bob.expect_message(body="after the expiry", timeout=10)
            R.check(barrier(alice) and wait_count(k, "alice", 3) == 3,
                    "alice's archive (not backdated) goes on: 3")
            bodies, total = mam_query(bob)
            R.check(total == len(bodies) == count(k, "bob"),
                    "bob's MAM RSM count matches kabarctl's and the results (%s, %d)"
                    % (total, len(bodies)))

        @R.section
        def usage_errors():
            for argv in (["archive"], ["archive", "show", "alice", "--last", "0"],
                         ["archive", "show", "alice", "--last", "x"], ["archive", "count"],
                         ["archive", "expire"], ["archive", "expire", "--older-than", "0"],
                         ["archive", "clear", "alice", "--with", "bob@localhost"]):
                r = k.ctl(*argv, check=False)
                R.check(r.returncode == 2 and r.stderr.startswith("kabarctl: "),
                        "kabarctl %s: exit 2 (%d %s)" % (" ".join(argv), r.returncode, out(r)))
            for argv, what in ((["archive", "count", "nobody"], "no such user"),
                               (["archive", "show", "nobody"], "no such user"),
                               (["archive", "show", "alice", "--with", "a@b@c"], "invalid JID")):
                r = k.ctl(*argv, check=False)
                R.check(r.returncode == 1 and what in r.stderr,
                        "kabarctl %s: exit 1, %s (%s)" % (" ".join(argv), what, out(r)))
            h = k.ctl("--help-all", check=False)
            R.check(h.returncode == 0 and all(w in h.stdout for w in (
                "archive", "--with", "--last", "--json", "--older-than")),
                "--help-all names the archive commands and their options")

        archive_and_read()
        clear_while_running()
        expire_while_running()
        usage_errors()
        alice.close()
        bob.close()

        R.check(k.stop() == 0, "kabard stops cleanly")
        # Without kabard: the same commands act on the database.
        n = count(k, "bob")
        R.check(n > 0, "archive count bob without kabard (%d)" % n)
        backdate(k, 1, 40)
        before = total_archived(k)
        r = k.ctl("archive", "expire", "--older-than", "30", check=False)
        R.check(r.returncode == 0 and "deleted 1 " in r.stdout and "running" not in r.stdout,
                "archive expire without kabard: 1, from the database (%s)" % out(r))
        R.check(total_archived(k) == before - 1, "1 fewer in the database")
        n = count(k, "bob")
        r = k.ctl("archive", "clear", "bob", check=False)
        R.check(r.returncode == 0 and ("cleared %d " % n) in r.stdout and "running" not in r.stdout,
                "archive clear bob without kabard: %d (%s)" % (n, out(r)))
        R.check(count(k, "bob") == 0, "bob's archive is empty")

        # A kabard started again archives on the cleared archive as on any other.
        k.start()
        alice = online(k.port, "alice", PW, resource="desk")
        bob = online(k.port, "bob", PW, resource="phone")
        alice.message("bob@localhost", "after the restart")
        bob.expect_message(body="after the restart", timeout=10)
        R.check(barrier(alice) and wait_count(k, "bob", 1) == 1,
                "archive count bob: 1 after a restart")
        bodies, total = mam_query(bob)
        R.check(bodies == ["after the restart"] and total == 1,
                "bob's MAM query: that one, RSM count 1 (%s, %s)" % (bodies, total))
        alice.close()
        bob.close()
        R.check(k.stop() == 0, "kabard stops cleanly again")
    finally:
        if R.failed:
            sys.stderr.write(k.read_log()[-4000:])
        k.cleanup()
    R.finish()


if __name__ == "__main__":
    main()
