"""`kabar history JID` reads the server's message archive (XEP-0313) against kabard: what alice
sent bob while he was offline is in both archives, oldest first, "me" for one's own lines;
`--max N` gives the newest N (the pages go backward from the end); `--since` a day in the future
gives nothing; a bidirectional override in a body is shown escaped, never given to the
terminal; a bad JID is a usage error (exit 2).

Run: /usr/bin/python3 test_kabar_history.py --kabard PATH --kabarctl PATH
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("kabar_history")
    binary = os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "kabar")
    with kabartest.Kabard(args) as kd:
        for user, pw in client_matrix.PASSWORDS.items():
            kd.add_user(user, pw)
        k = client_matrix.Kabar(binary, kd.port, kd.domain, kd.dir)
        sent = [f"hello {i}" for i in range(1, 6)] + ["evil \u202e txt"]
        for text in sent:
            r = k.run("send", "bob@localhost", text, user="alice")
            R.check(r.returncode == 0, f"alice sends {text!r} ({r.stderr.strip()})")

        r = k.run("history", "alice@localhost", user="bob")
        lines = r.stdout.splitlines()
        R.check(r.returncode == 0 and len(lines) == 6,
                f"bob's history with alice: 6 lines, exit 0 ({r.returncode}, {r.stdout!r}, "
                f"{r.stderr.strip()!r})")
        R.check(all(l.endswith(f"alice@localhost: hello {i}") for i, l in
                    zip(range(1, 6), lines)), "oldest first, each from alice")
        R.check(all(len(l) > 20 and l[4] == "-" and l[10] == " " for l in lines),
                "each line starts with its UTC time")
        R.check("\u202e" not in r.stdout and "evil" in r.stdout,
                "the bidirectional override is shown escaped, not given to the terminal")

        r = k.run("history", "bob@localhost", user="alice")
        lines = r.stdout.splitlines()
        R.check(r.returncode == 0 and len(lines) == 6
                and all(l.endswith(f"me: hello {i}") for i, l in zip(range(1, 6), lines)),
                f"alice's history with bob: her 6 lines as 'me' ({r.stdout!r})")

        r = k.run("history", "alice@localhost", "--max", "2", user="bob")
        lines = r.stdout.splitlines()
        R.check(r.returncode == 0 and len(lines) == 2 and lines[0].endswith("hello 5"),
                f"--max 2: the newest two, oldest first ({r.stdout!r})")

        r = k.run("history", "alice@localhost", "--since", "2999-01-01", user="bob")
        R.check(r.returncode == 0 and r.stdout == "", f"--since the future: nothing ({r.stdout!r})")
        r = k.run("history", "alice@localhost", "--since", "yesterday", user="bob")
        R.check(r.returncode == 2 and "--since" in r.stderr,
                f"--since yesterday: exit 2 naming the option ({r.stderr.strip()!r})")
        r = k.run("history", "@@", user="bob")
        R.check(r.returncode == 2, f"a bad JID: exit 2 ({r.stderr.strip()!r})")
        R.check(kd.alive(), "kabard still running at the end")
    R.finish()


if __name__ == "__main__":
    main()
