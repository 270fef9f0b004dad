"""`kabar` with Debian's Profanity 0.13 (in tmux) on the other side:
- Profanity asks bob for his presence: bob's `listen` prints the request with the command that
  answers it; `kabar roster` shows it with how to answer; in `kabar chat` (tmux) it is marked
  `[?]` and a bare /approve approves it (the one request waiting) and asks back: bob's roster
  then shows his own request to Profanity as "(asked)", Profanity's account has bob as "to",
  and once Profanity allows it both rosters say "both".
- `kabar sendfile` to Profanity, which has no Jingle file transfer: the file goes by HTTP upload
  and a link (Profanity shows the link), with the reason said, exit 0; `/file` in `kabar chat`
  does the same.

Run: /usr/bin/python3 test_kabar_profanity.py --kabard PATH --kabarctl PATH
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402
from test_client_chat import Tmux  # noqa: E402

STEP = 20


def read(f):
    f.seek(0)
    return f.read()


def wait_file(f, needle, timeout=STEP):
    """Waits until the file object's text holds `needle`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if needle in read(f):
            return True
        time.sleep(0.1)
    return False


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_profanity")
    if shutil.which("profanity") is None or shutil.which("tmux") is None:
        R.check(False, "profanity and tmux are installed")
        R.finish()
    tmp = tempfile.mkdtemp(prefix="kabar-prof2-")
    tmux = Tmux(tmp)
    http_port = kabartest.free_port()
    try:
        with kabartest.Kabard(args, extra_flags=["--http", f"127.0.0.1:{http_port}"]) as srv:
            carol_pw = "Carol-Prof-7"
            srv.add_user("carol", carol_pw)
            srv.add_user("bob", client_matrix.PASSWORDS["bob"])
            k = client_matrix.Kabar(client_matrix.kabar_binary(args), srv.port, srv.domain, tmp)
            bob, carol = f"bob@{srv.domain}", f"carol@{srv.domain}"
            home = os.path.join(tmp, "prof-home")
            os.makedirs(home)
            env = {"HOME": home, "XDG_CONFIG_HOME": os.path.join(home, ".config"),
                   "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
                   "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
            tmux.start("prof", "profanity", env)
            ok, text = tmux.wait("prof", "Profanity", timeout=STEP)
            R.check(ok, "profanity starts")
            tmux.keys("prof", f"/connect {carol} server 127.0.0.1 port {srv.port} tls trust")
            ok, text = tmux.wait("prof", "password:", timeout=STEP)
            tmux.keys("prof", carol_pw)
            ok, text = tmux.wait("prof", "logged in successfully", timeout=STEP)
            if not R.check(ok, "profanity logs in as carol\n" + text):
                return

            # bob listens (plain text) while Profanity asks him.
            out = open(os.path.join(tmp, "bob-listen.txt"), "w+")
            lp = subprocess.Popen([k.binary, "listen"], env=k.env("bob"), stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                R.check(wait_file(out, "listening as "), "bob listens")
                tmux.keys("prof", f"/sub request {bob}")
                hint = f"asks to see your presence: kabar roster approve {carol} (or deny {carol})"
                R.check(wait_file(out, hint),
                        f"bob's listen: Profanity's request and how to answer it: {read(out)!r}")
            finally:
                lp.terminate()
                lp.wait(timeout=10)
                out.close()
            r = k.run("roster", user="bob")
            lines = dict(l.split("\t", 1) for l in r.stdout.splitlines() if "\t" in l)
            R.check(lines.get(carol) == f"none (asks you: kabar roster approve {carol}, or deny)",
                    f"bob's roster shows Profanity's request and how to answer: {r.stdout!r}")

            # bob's chat: the one request waiting is Profanity's; a bare /approve answers it.
            e = {kk: v for kk, v in k.env("bob").items()
                 if kk.startswith("KABAR_") or kk in ("HOME", "PATH")}
            e["LANG"] = "C.UTF-8"
            tmux.start("bob", f"{k.binary} chat", e)
            ok, text = tmux.wait("bob", f"[?] {carol}", timeout=STEP)
            R.check(ok, "bob's chat marks Profanity's request with [?]\n" + text)
            tmux.keys("bob", "/approve")
            ok, text = tmux.wait("bob", f"approved {carol}", timeout=STEP)
            R.check(ok, "a bare /approve approves the one request waiting\n" + text)
            tmux.keys("bob", "/quit")
            deadline = time.time() + 10
            while tmux.alive("bob") and time.time() < deadline:
                time.sleep(0.1)

            deadline = time.time() + STEP
            lines = {}
            while time.time() < deadline and "asks you" not in lines.get(bob, ""):
                r = k.run("roster", user="carol", password=carol_pw)
                lines = dict(l.split("\t", 1) for l in r.stdout.splitlines() if "\t" in l)
            R.check(lines.get(bob, "").startswith("to"),
                    f"carol's roster (Profanity's account) now sees bob's presence: {lines.get(bob)!r}")
            R.check("asks you" in lines.get(bob, ""), "and bob asked back")
            r = k.run("roster", user="bob")
            lines = dict(l.split("\t", 1) for l in r.stdout.splitlines() if "\t" in l)
            R.check(lines.get(carol) == "from (asked)",
                    f"bob's roster: his request to Profanity waits, '(asked)': {lines.get(carol)!r}")
            tmux.keys("prof", f"/sub allow {bob}")
            deadline = time.time() + STEP
            while time.time() < deadline and lines.get(carol) != "both":
                r = k.run("roster", user="bob")
                lines = dict(l.split("\t", 1) for l in r.stdout.splitlines() if "\t" in l)
            R.check(lines.get(carol) == "both",
                    f"Profanity allows it: bob's roster says 'both': {lines.get(carol)!r}")

            src = os.path.join(tmp, "minutes.txt")
            with open(src, "w") as f:
                f.write("the minutes of the meeting\n" * 1000)
            r = k.run("sendfile", carol, src, user="bob", timeout=120)
            R.check(r.returncode == 0 and "does not support Jingle file transfer" in r.stdout and
                    "uploaded" in r.stdout,
                    f"sendfile to Profanity: why, then upload and link, exit 0 "
                    f"({r.returncode}: {r.stdout.strip()} {r.stderr.strip()})")
            ok, text = tmux.wait("prof", "/minutes.txt", timeout=5)
            if not ok:
                tmux.keys("prof", f"/msg {bob}")
                ok, text = tmux.wait("prof", "/minutes.txt", timeout=STEP)
            R.check(ok and f"http://127.0.0.1:{http_port}/" in text.replace("\n", ""),
                    "Profanity shows the link\n" + text)

            # The same from kabar chat: /file to Profanity goes by upload, and the line says why.
            src = os.path.join(tmp, "agenda.txt")
            with open(src, "w") as f:
                f.write("the agenda of the next meeting\n" * 100)
            tmux.start("bob", f"{k.binary} chat", e)
            ok, text = tmux.wait("bob", f"[+] {carol}", timeout=STEP)
            R.check(ok, "bob's chat shows Profanity's carol online\n" + text)
            tmux.keys("bob", f"/file {src}")
            ok, text = tmux.wait("bob", "sent the link", timeout=STEP)
            flat = text.replace("\n", "")
            R.check(ok and "does not support Jingle file transfer" in flat and "uploaded" in flat,
                    "kabar chat's /file to Profanity: why, then upload and link\n" + text)
            ok, text = tmux.wait("prof", "/agenda.txt", timeout=STEP)
            R.check(ok, "Profanity shows that link too\n" + text)
            tmux.keys("bob", "/quit")
            tmux.keys("prof", "/quit")
    finally:
        tmux.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
