"""The kabar client matrix: the same checks of the `kabar` command (and through it the client
library) against one server: kabard, Debian's Prosody or Debian's ejabberd. Used by
test_client_kabard.py, test_client_prosody.py and test_client_ejabberd.py.

Checks: register (and a taken name), login with a wrong password, an unreachable server, an
untrusted certificate (refused, then accepted by its pinned fingerprint), the config file's mode,
offline delivery with a delay stamp, the subscription handshake to a mutual roster, presence with
show and status, messages both ways, receipts, unknown contacts, a password change. No password
may appear in any output.
"""
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "peers"))
import kabartest  # noqa: E402
import peers  # noqa: E402

PASSWORDS = {"alice": "Alice-Secret-1", "bob": "Bob-Secret-2"}


class Kabar:
    """Runs the kabar binary against one server, with a private HOME."""

    def __init__(self, binary, port, domain, workdir):
        self.binary = binary
        self.port = port
        self.domain = domain
        self.home = os.path.join(workdir, "home")
        os.makedirs(self.home, exist_ok=True)
        self.outputs = []

    def env(self, user=None, password=None, insecure=True, home=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("KABAR_")}
        e["HOME"] = home or os.path.join(self.home, user or "nobody")
        os.makedirs(e["HOME"], exist_ok=True)
        e["KABAR_SERVER"] = f"127.0.0.1:{self.port}"
        if insecure:
            e["KABAR_INSECURE"] = "1"
        if user:
            e["KABAR_JID"] = f"{user}@{self.domain}"
            e["KABAR_PASSWORD"] = password if password is not None else PASSWORDS[user]
        return e

    def run(self, *argv, user=None, password=None, insecure=True, env=None, timeout=30):
        e = env or self.env(user, password, insecure)
        r = subprocess.run([self.binary, *argv], env=e, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=timeout)
        self.outputs.append(r.stdout + r.stderr)
        return r

    def listen(self, user, *extra):
        return Listener(self, user, extra)

    def befriend(self, R, a="alice", b="bob"):
        """A mutual subscription between `a` and `b` (add, approve, approve), each step a check of
        `R`. Returns their bare JIDs."""
        ja, jb = f"{a}@{self.domain}", f"{b}@{self.domain}"
        for user, argv in ((a, ("add", jb)), (b, ("approve", ja)), (a, ("approve", jb))):
            r = self.run("roster", *argv, user=user)
            R.check(r.returncode == 0, f"{user}: roster {' '.join(argv)}")
        return ja, jb

    def terminal_env(self, user):
        """The environment for `kabar chat` as `user` in a terminal: only the KABAR_ settings,
        HOME and PATH, and a UTF-8 locale."""
        e = {kk: v for kk, v in self.env(user).items()
             if kk.startswith("KABAR_") or kk in ("HOME", "PATH")}
        e["LANG"] = "C.UTF-8"
        return e


class Listener(kabartest.JsonLines):
    """`kabar listen --json` in the background; every line it writes is kept in kabar.outputs."""

    def __init__(self, kabar, user, extra=()):
        self.kabar = kabar
        super().__init__([kabar.binary, "listen", "--json", *extra], kabar.env(user),
                         on_line=kabar.outputs.append)

    def stop(self):
        rc = super().stop()
        self.kabar.outputs.append(self.stderr)
        return rc


def run_matrix(res, k, server_name, registration=True):
    d = k.domain
    alice, bob = f"alice@{d}", f"bob@{d}"
    listeners = []
    try:
        _run(res, k, server_name, d, alice, bob, listeners, registration)
    finally:
        for li in listeners:
            li.stop()
    leaked = [o for o in k.outputs if any(p in o for p in PASSWORDS.values())
              or "New-Secret-3" in o]
    res.check(not leaked, f"{server_name}: no password in any output")


def _run(res, k, name, d, alice, bob, listeners, registration):
    if registration:
        r = k.run("register", alice, user="alice")
        res.check(r.returncode == 0 and "registered" in r.stdout, f"{name}: register alice ({r.stderr.strip()})")
        r = k.run("register", bob, user="bob")
        res.check(r.returncode == 0, f"{name}: register bob ({r.stderr.strip()})")
        r = k.run("register", alice, user="alice")
        res.check(r.returncode == 6 and "already exists" in r.stderr and r.stderr.count("\n") == 1,
                  f"{name}: registering a taken name: one line, exit 6 ({r.stderr.strip()})")

    r = k.run("roster", user="alice", password="wrong-password")
    res.check(r.returncode == 3 and "wrong password" in r.stderr and r.stderr.count("\n") == 1,
              f"{name}: wrong password: one line, exit 3 ({r.stderr.strip()})")

    e = k.env("alice")
    e["KABAR_SERVER"] = f"127.0.0.1:{peers.free_port()}"
    r = k.run("roster", env=e)
    res.check(r.returncode == 4 and "cannot reach" in r.stderr,
              f"{name}: unreachable server: exit 4 ({r.stderr.strip()})")

    r = k.run("roster", user="alice", insecure=False)
    m = re.search(r"SHA-256 ([0-9a-f]{64})", r.stderr)
    res.check(r.returncode == 5 and "not trusted" in r.stderr and m,
              f"{name}: self-signed certificate refused without --insecure, exit 5 ({r.stderr.strip()})")
    if m:
        r = k.run("--pin", m.group(1), "roster", user="alice", insecure=False)
        res.check(r.returncode == 0, f"{name}: accepted with its pinned fingerprint ({r.stderr.strip()})")
        r = k.run("--pin", "00" * 32, "roster", user="alice", insecure=False)
        res.check(r.returncode == 5 and "does not match" in r.stderr,
                  f"{name}: a wrong pin is refused ({r.stderr.strip()})")

    # Credentials from the config file, refused unless mode 0600.
    home = tempfile.mkdtemp(dir=k.home)
    cfgdir = os.path.join(home, ".config", "kabar")
    os.makedirs(cfgdir)
    cfg = os.path.join(cfgdir, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'jid = "{alice}"\npassword = "{PASSWORDS["alice"]}"\n'
                f'server = "127.0.0.1:{k.port}"\ninsecure = true\n')
    os.chmod(cfg, 0o644)
    env = {kk: v for kk, v in os.environ.items() if not kk.startswith("KABAR_")}
    env["HOME"] = home
    r = k.run("roster", env=env)
    res.check(r.returncode == 2 and "chmod 600" in r.stderr,
              f"{name}: config.toml readable by others is refused ({r.stderr.strip()})")
    os.chmod(cfg, 0o600)
    r = k.run("roster", env=env)
    res.check(r.returncode == 0, f"{name}: credentials from config.toml ({r.stderr.strip()})")

    # Offline delivery: bob is not online yet.
    r = k.run("send", bob, "while you were away", user="alice")
    res.check(r.returncode == 0, f"{name}: send to an offline contact ({r.stderr.strip()})")

    # Unknown contact.
    r = k.run("send", f"nobody-here@{d}", "hello?", user="alice")
    res.check(r.returncode == 7 and "unknown" in r.stderr and r.stderr.count("\n") == 1,
              f"{name}: message to an unknown account: one line, exit 7 ({r.stderr.strip()})")
    r = k.run("roster", "remove", f"nobody-here@{d}", user="alice")
    res.check(r.returncode == 7 and "not in your roster" in r.stderr,
              f"{name}: removing an unknown contact: exit 7 ({r.stderr.strip()})")

    # Subscription handshake: alice asks, bob approves (and asks back), alice approves.
    r = k.run("roster", "add", bob, user="alice")
    res.check(r.returncode == 0, f"{name}: alice adds bob ({r.stderr.strip()})")
    r = k.run("roster", "list", user="alice")
    res.check(r.returncode == 0 and bob in r.stdout and "(asked)" in r.stdout,
              f"{name}: alice's roster shows bob as asked ({r.stdout.strip()})")
    r = k.run("roster", "approve", alice, user="bob")
    res.check(r.returncode == 0, f"{name}: bob approves alice ({r.stderr.strip()})")
    r = k.run("roster", "approve", bob, user="alice")
    res.check(r.returncode == 0, f"{name}: alice approves bob ({r.stderr.strip()})")
    ra = k.run("roster", "list", user="alice")
    rb = k.run("roster", "list", user="bob")
    res.check(re.search(rf"^{re.escape(bob)}\tboth$", ra.stdout, re.M) is not None,
              f"{name}: alice's roster: bob, both ({ra.stdout.strip()})")
    res.check(re.search(rf"^{re.escape(alice)}\tboth$", rb.stdout, re.M) is not None,
              f"{name}: bob's roster: alice, both ({rb.stdout.strip()})")
    # The versioned cache is written and reused.
    cache = os.path.join(k.home, "alice", ".cache", "kabar")
    res.check(os.path.isdir(cache) and any(n.startswith("roster-") for n in os.listdir(cache)),
              f"{name}: roster cache written")

    # bob comes online: the offline message arrives with its delay stamp.
    lb = k.listen("bob")
    listeners.append(lb)
    res.check(lb.wait(lambda e: e["type"] == "ready") is not None, f"{name}: bob listens")
    ev = lb.wait(lambda e: e["type"] == "message" and e.get("body") == "while you were away")
    res.check(ev is not None and ev.get("delay") and ev["from"].startswith(alice),
              f"{name}: offline message delivered at login with a delay stamp ({ev})")

    # Presence: alice announces away with a status; bob sees it per resource.
    r = k.run("status", "away", "at lunch", user="alice")
    res.check(r.returncode == 0, f"{name}: alice sets her status ({r.stderr.strip()})")
    ev = lb.wait(lambda e: e["type"] == "presence" and e["from"].startswith(alice + "/"))
    res.check(ev is not None and ev.get("show") == "away" and ev.get("status") == "at lunch",
              f"{name}: bob sees alice away, 'at lunch' ({ev})")
    ev = lb.wait(lambda e: e["type"] == "unavailable" and e["from"].startswith(alice + "/"))
    res.check(ev is not None, f"{name}: bob sees alice go offline")

    # Messages both ways, with both online.
    la = k.listen("alice")
    listeners.append(la)
    res.check(la.wait(lambda e: e["type"] == "ready") is not None, f"{name}: alice listens")
    ev = la.wait(lambda e: e["type"] == "presence" and e["from"].startswith(bob + "/"))
    res.check(ev is not None, f"{name}: alice sees bob online")
    ev = lb.wait(lambda e: e["type"] == "presence" and e["from"].startswith(alice + "/")
                 and e.get("show") == "away")
    res.check(ev is not None, f"{name}: bob sees alice online again, with her saved status")
    r = k.run("send", alice, "hello from bob ✓ <&>", user="bob")
    res.check(r.returncode == 0, f"{name}: bob sends ({r.stderr.strip()})")
    ev = la.wait(lambda e: e["type"] == "message" and e.get("body") == "hello from bob ✓ <&>")
    res.check(ev is not None and not ev.get("delay"), f"{name}: alice receives bob's message live")
    r = k.run("send", bob, "hello from alice", user="alice")
    res.check(r.returncode == 0, f"{name}: alice sends ({r.stderr.strip()})")
    ev = lb.wait(lambda e: e["type"] == "message" and e.get("body") == "hello from alice")
    res.check(ev is not None, f"{name}: bob receives alice's message live")

    for li in listeners:
        rc = li.stop()
        res.check(rc == 0 and not li.stderr.strip(),
                  f"{name}: listen ran without a disconnect and exits 0 on SIGTERM ({li.stderr.strip()})")
    listeners.clear()

    # Password change, then the old password no longer works.
    e = k.env("alice")
    e["KABAR_NEW_PASSWORD"] = "New-Secret-3"
    r = k.run("passwd", env=e)
    res.check(r.returncode == 0, f"{name}: password change ({r.stderr.strip()})")
    r = k.run("roster", user="alice", password="New-Secret-3")
    res.check(r.returncode == 0, f"{name}: login with the new password ({r.stderr.strip()})")
    r = k.run("roster", user="alice")
    res.check(r.returncode == 3, f"{name}: the old password is refused")


def kabar_binary(args):
    return os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "kabar")


@contextlib.contextmanager
def kabard_with_kabar(args, workdir, extra_flags=()):
    """A kabard with the PASSWORDS accounts, and a Kabar against it working in `workdir`:
    yields (kabard, kabar)."""
    with kabartest.Kabard(args, extra_flags=extra_flags) as srv:
        for user, pw in PASSWORDS.items():
            srv.add_user(user, pw)
        yield srv, Kabar(kabar_binary(args), srv.port, srv.domain, workdir)


def main(server_kind):
    args = kabartest.parse_args()
    res = kabartest.Results(f"test_client_{server_kind}")
    binary = kabar_binary(args)
    work = tempfile.mkdtemp(prefix="kabar-client-")
    start = time.time()
    try:
        if server_kind == "kabard":
            with kabartest.Kabard(args) as srv:
                k = Kabar(binary, srv.port, srv.domain, work)
                run_matrix(res, k, "kabard")
                e = k.env("bob")
                e["KABAR_SERVER"] = f"127.0.0.1:{srv.tls_port}"
                r = k.run("--direct-tls", "roster", env=e)
                res.check(r.returncode == 0 and "alice@" in r.stdout,
                          f"kabard: direct TLS (XEP-0368) login ({r.stderr.strip()})")
                # Reconnect with backoff: kabard restarts under a listening client.
                lb = k.listen("bob")
                try:
                    res.check(lb.wait(lambda ev: ev["type"] == "ready") is not None,
                              "kabard: bob listens before the restart")
                    srv.stop()
                    srv.start()
                    readies = []
                    ev = lb.wait(lambda ev: ev["type"] == "ready" and readies.append(ev)
                                 is None and len(readies) == 2, timeout=20)
                    res.check(ev is not None, "kabard: listen reconnects after a server restart")
                finally:
                    lb.stop()
                res.check("reconnecting" in lb.stderr and lb.stderr.count("\n") == 1,
                          f"kabard: one line says why it reconnected ({lb.stderr.strip()})")
        else:
            if shutil.which("prosody" if server_kind == "prosody" else "erl") is None:
                res.check(False, f"{server_kind} is installed (make deps)")
            else:
                with peers.start(server_kind) as srv:
                    run_matrix(res, Kabar(binary, srv.port, srv.domain, work), server_kind)
    except Exception as e:  # a harness failure is a failed check, not a traceback
        res.check(False, f"{server_kind}: {e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"({time.time() - start:.1f} s)")
    res.finish()
