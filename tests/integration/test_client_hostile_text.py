"""The kabar command and hostile or impossible text.

- `kabar send` with an ESC in the text: XML 1.0 cannot carry it, so the client library refuses it
  with one clear line and exit code 2, sends nothing (kabard sees no not-well-formed and ends no
  stream), and the next message goes through.

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

R = kabartest.Results("client_hostile_text")


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
    finally:
        bob.stop()


if __name__ == "__main__":
    main()
