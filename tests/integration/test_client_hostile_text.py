"""The kabar command and hostile or impossible text.

- `kabar send` with an ESC in the text: XML 1.0 cannot carry it, so the client library refuses it
  with one clear line and exit code 2, sends nothing (kabard sees no not-well-formed and ends no
  stream), and the next message goes through.
- Text from a peer that a terminal would act on (the C1 control U+009B CSI, a right-to-left
  override, a newline that would fake another line): `kabar listen` prints it escaped on one line;
  `kabar listen --json` stays valid JSON, gives back the exact text, and shows none of it raw.

Run: /usr/bin/python3 test_client_hostile_text.py --kabard PATH --kabarctl PATH
"""
import os
import sys
import tempfile
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402
from xmpp_raw import login  # noqa: E402

R = kabartest.Results("client_hostile_text")
HOSTILE = "red\u009b31m \u202egpj.exe\nalice@localhost: fake line"
STATUS = "away\u009b2J\u2066"


def main():
    args = kabartest.parse_args()
    work = tempfile.mkdtemp(prefix="kabar-hostile-")
    try:
        with kabartest.Kabard(args) as srv:
            srv.add_user("alice", client_matrix.PASSWORDS["alice"])
            srv.add_user("bob", client_matrix.PASSWORDS["bob"])
            k = client_matrix.Kabar(client_matrix.kabar_binary(args), srv.port, srv.domain, work)
            run(srv, k)
            R.check(srv.alive(), "kabard alive")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    R.finish()


def run(srv, k):
    bob = k.listen("bob")
    try:
        ready = bob.wait(lambda e: e["type"] == "ready")
        R.check(ready is not None, "bob listens (--json)")

        r = k.run("send", "bob@localhost", "hi \x1b[2J there", user="alice")
        lines = r.stderr.strip().splitlines()
        R.check(r.returncode == 2 and len(lines) == 1 and "U+001B (ESC)" in lines[0]
                and lines[0].startswith("kabar: the message contains") and r.stdout == "",
                "kabar send with an ESC: one clear line, exit 2 (%d: %r)" % (r.returncode, r.stderr))
        R.check("\x1b" not in r.stderr, "the error line itself holds no raw ESC")
        r = k.run("send", "bob@localhost", b"bad \xff utf-8", user="alice")
        R.check(r.returncode == 2 and "not valid UTF-8 (byte 0xFF at offset 4)" in r.stderr,
                "kabar send with invalid UTF-8: refused (%d: %r)" % (r.returncode, r.stderr))
        r = k.run("send", "bob@localhost", "clean after", user="alice")
        R.check(r.returncode == 0, "the next message goes through (%d: %s)" % (r.returncode, r.stderr))
        ev = bob.wait(lambda e: e["type"] == "message" and e.get("body") == "clean after")
        R.check(ev is not None, "bob receives it")
        R.check(not any(e["type"] == "message" and e.get("body") != "clean after"
                        for e in bob.events),
                "bob received nothing else: the refused text was never sent (%s)" % bob.events)
        log = srv.read_log()
        R.check("not-well-formed" not in log, "kabard saw no not-well-formed XML")

        raw = login(srv.port, "alice", client_matrix.PASSWORDS["alice"], resource="raw")
        # To the full JID: delivered at once, whether or not bob's presence got there yet.
        raw.message(ready["jid"], HOSTILE)
        raw.presence(to=ready["jid"], extra="<status>%s</status>" % STATUS)
        ev = bob.wait(lambda e: e["type"] == "message" and e.get("from") == "alice@localhost/raw")
        R.check(ev is not None and ev["body"] == HOSTILE,
                "--json gives back the exact body (%r)" % (ev and ev.get("body")))
        ev = bob.wait(lambda e: e["type"] == "presence" and e.get("from") == "alice@localhost/raw")
        R.check(ev is not None and ev.get("status") == STATUS,
                "--json gives back the exact status text (%r)" % (ev and ev.get("status")))
        R.check(not any(e["type"] == "bad-line" for e in bob.events), "every --json line is JSON")
        printed = "".join(k.outputs)
        R.check(not any(c in printed for c in "\u009b\u202e\u2066\x1b"),
                "no C1, bidi or ESC character reaches the terminal raw in --json output")
        R.check("\\u009b" in printed and "\\u202e" in printed,
                "they are there escaped (\\u009b, \\u202e)")
    finally:
        bob.stop()

    # The plain output: one line per event, escaped. Its lines are not JSON: JsonLines keeps
    # each as a "bad-line" event.
    plain = kabartest.JsonLines([k.binary, "listen"], k.env("bob"))
    try:
        ready = plain.wait(lambda e: e.get("line", "").startswith("listening as "))
        R.check(ready is not None, "bob listens (plain)")
        bob_jid = ready["line"].split()[-1]
        raw.message(bob_jid, HOSTILE)
        ev = plain.wait(lambda e: e.get("line", "").startswith("alice@localhost/raw: red"))
        want = "alice@localhost/raw: red\\u009b31m \\u202egpj.exe\\nalice@localhost: fake line\n"
        R.check(ev is not None and ev["line"] == want,
                "plain listen prints the body escaped on one line (%r)" % (ev and ev["line"]))
        R.check(plain.wait(lambda e: e.get("line", "").startswith("alice@localhost: fake"),
                           timeout=1) is None, "the newline in the body faked no line")
        raw.presence(to=bob_jid, extra="<status>%s</status>" % STATUS)
        ev = plain.wait(lambda e: e.get("line", "").startswith("alice@localhost/raw online"))
        R.check(ev is not None and ev["line"] ==
                "alice@localhost/raw online \"away\\u009b2J\\u2066\"\n",
                "plain listen prints the status text escaped (%r)" % (ev and ev["line"]))
    finally:
        plain.stop()
        raw.close()


if __name__ == "__main__":
    main()
