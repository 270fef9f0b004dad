"""Several accounts of one Unix user (one HOME): each keeps its own saved status. alice's
`kabar status dnd very busy` (the words after SHOW form one text) is what alice's `listen`
announces, while bob's `listen` announces bob's own (online, no text), as a mutual contact sees.
Every file kabar keeps (status, roster cache) is mode 0600 and its folders 0700, under a umask
of 022.

Run: /usr/bin/python3 test_kabar_accounts.py --kabard PATH --kabarctl PATH
"""
import os
import shutil
import stat
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_accounts")
    os.umask(0o022)
    tmp = tempfile.mkdtemp(prefix="kabar-accounts-")
    listeners = []
    try:
        with kabartest.Kabard(args) as srv:
            for user, pw in client_matrix.PASSWORDS.items():
                srv.add_user(user, pw)
            k = client_matrix.Kabar(client_matrix.kabar_binary(args), srv.port, srv.domain, tmp)
            home = os.path.join(tmp, "shared-home")

            def env(user):
                return k.env(user, home=home)

            alice, bob = f"alice@{srv.domain}", f"bob@{srv.domain}"
            for user, argv in (("alice", ("add", bob)), ("bob", ("approve", alice)),
                               ("alice", ("approve", bob))):
                r = k.run("roster", *argv, env=env(user))
                R.check(r.returncode == 0, f"{user}: roster {' '.join(argv)} ({r.stderr.strip()})")

            r = k.run("status", "dnd", "very", "busy", env=env("alice"))
            R.check(r.returncode == 0, f"alice: kabar status dnd very busy ({r.stderr.strip()})")

            # bob listens first and sees alice's listen announce alice's saved status.
            lb = kabartest.JsonLines([k.binary, "listen", "--json"], env("bob"))
            listeners.append(lb)
            R.check(lb.wait(lambda e: e.get("type") == "ready") is not None, "bob listens")
            la = kabartest.JsonLines([k.binary, "listen", "--json"], env("alice"))
            listeners.append(la)
            ev = lb.wait(lambda e: e.get("type") == "presence" and e.get("from", "").startswith(alice))
            R.check(ev is not None and ev.get("show") == "dnd" and ev.get("status") == "very busy",
                    f"alice's listen announces alice's saved status (dnd, very busy): {ev}")
            # alice sees bob's presence as bob's listen announced it: bob saved nothing.
            ev = la.wait(lambda e: e.get("type") == "presence" and e.get("from", "").startswith(bob))
            R.check(ev is not None and "show" not in ev and "status" not in ev,
                    f"bob's listen announces plain online, not alice's status: {ev}")
            for li in listeners:
                li.stop()
            listeners.clear()

            state = os.path.join(home, ".local", "state", "kabar")
            cache = os.path.join(home, ".cache", "kabar")
            R.check(os.path.exists(os.path.join(state, f"status-{alice}")) and
                    not os.path.exists(os.path.join(state, f"status-{bob}")) and
                    not os.path.exists(os.path.join(state, "status")),
                    f"the status is saved for alice only: {sorted(os.listdir(state))}")
            files = []
            for d in (state, cache):
                mode = stat.S_IMODE(os.stat(d).st_mode)
                R.check(mode == 0o700, f"{d} is mode 0700 ({oct(mode)})")
                for name in os.listdir(d):
                    p = os.path.join(d, name)
                    files.append(name)
                    mode = stat.S_IMODE(os.stat(p).st_mode)
                    R.check(mode == 0o600, f"{name} is mode 0600 ({oct(mode)})")
            R.check(any(f.startswith("roster-") for f in files), f"the roster cache is there: {files}")
    finally:
        for li in listeners:
            li.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
