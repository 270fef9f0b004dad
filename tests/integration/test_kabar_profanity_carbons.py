"""Message carbons (XEP-0280) between `kabar chat` and Debian's Profanity 0.13, both logged in as
alice, each in its own tmux session (issue 17):
- bob (`kabar send`) sends alice a message: both show it (as the original or a received carbon);
- Profanity sends bob a message: `kabar chat` shows it as "me" in the conversation with bob (a
  sent carbon);
- `kabar chat` quits, Profanity sends bob another: `kabar history bob@localhost` (the server's
  archive) has it as "me";
- `kabar chat` again: its local history has the sent carbon as "me", and the message sent while
  it was off is filled in from the server's archive (XEP-0313), each message once, in order; a
  third start shows the same, from the local history.

Run: /usr/bin/python3 test_kabar_profanity_carbons.py --kabard PATH --kabarctl PATH
"""
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402
from test_client_chat import Tmux  # noqa: E402
from test_profanity_carbons import CARBONS_ERROR  # noqa: E402

STEP = 20


def wait_log(path, needles, timeout=STEP):
    """Waits until one of `needles` is in the file at `path`; returns it, or None."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        for n in needles:
            if n in text:
                return n
        time.sleep(0.2)
    return None


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_profanity_carbons")
    if shutil.which("profanity") is None or shutil.which("tmux") is None:
        R.check(False, "profanity and tmux are installed")
        R.finish()
    tmp = tempfile.mkdtemp(prefix="kabar-profcarb-")
    tmux = Tmux(tmp)
    home = os.path.join(tmp, "prof-home")
    os.makedirs(home)
    try:
        with kabartest.Kabard(args) as srv:
            binary = client_matrix.kabar_binary(args)
            k = client_matrix.Kabar(binary, srv.port, srv.domain, tmp)
            alice, bob = f"alice@{srv.domain}", f"bob@{srv.domain}"
            for user in ("alice", "bob"):
                srv.add_user(user, client_matrix.PASSWORDS[user])
            for user, argv in (("alice", ("add", bob)), ("bob", ("approve", alice)),
                               ("alice", ("approve", bob))):
                r = k.run("roster", *argv, user=user)
                R.check(r.returncode == 0, f"{user}: roster {' '.join(argv)} ({r.stderr.strip()})")

            # Profanity as alice, its chat window with bob open.
            env = {"HOME": home, "XDG_CONFIG_HOME": os.path.join(home, ".config"),
                   "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
                   "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
            tmux.start("prof", "profanity -l DEBUG", env)
            ok, text = tmux.wait("prof", "Profanity", timeout=STEP)
            R.check(ok, "profanity starts")
            tmux.keys("prof", f"/connect {alice} server 127.0.0.1 port {srv.port} tls trust")
            ok, text = tmux.wait("prof", "password:", timeout=STEP)
            tmux.keys("prof", client_matrix.PASSWORDS["alice"])
            ok, text = tmux.wait("prof", "logged in successfully", timeout=STEP)
            if not R.check(ok, "profanity logs in as alice\n" + text):
                return
            log = os.path.join(home, ".local", "share", "profanity", "logs", "profanity.log")
            enabled = wait_log(log, ["Message carbons enabled", CARBONS_ERROR])
            R.check(enabled == "Message carbons enabled", f"profanity enables carbons ({enabled})")
            tmux.keys("prof", f"/msg {bob}")
            tmux.wait("prof", bob, timeout=STEP)

            # kabar chat as alice too (another resource of the same account).
            e = k.env("alice")
            e = {kk: v for kk, v in e.items() if kk.startswith("KABAR_") or kk in ("HOME", "PATH")}
            e["LANG"] = "C.UTF-8"
            tmux.start("kchat", f"{binary} chat", e)
            ok, text = tmux.wait("kchat", f"online as {alice}", timeout=STEP)
            if not R.check(ok, "kabar chat connects as alice\n" + text):
                return

            # bob -> alice: both of alice's clients show it.
            body1 = "From bob to alice 41c7"
            r = k.run("send", alice, body1, user="bob")
            R.check(r.returncode == 0, f"bob sends alice a message ({r.stderr.strip()})")
            ok, text = tmux.wait("kchat", f"bob: {body1}", timeout=STEP)
            R.check(ok, "kabar chat shows bob's message\n" + text)
            ok, text = tmux.wait("prof", body1, timeout=STEP)
            R.check(ok, "profanity shows bob's message\n" + text)

            # Profanity -> bob: kabar chat shows it as alice's own (a sent carbon).
            body2 = "From profanity to bob 9e02"
            tmux.keys("prof", body2)
            ok, text = tmux.wait("kchat", f"me: {body2}", timeout=STEP)
            R.check(ok, "kabar chat shows Profanity's message to bob as 'me'\n" + text)
            R.check(f"bob: {body2}" not in text, "and not as bob's")

            # kabar chat quits; Profanity sends another; the archive has it.
            tmux.keys("kchat", "/quit")
            deadline = time.time() + STEP
            while tmux.alive("kchat") and time.time() < deadline:
                time.sleep(0.1)
            R.check(not tmux.alive("kchat"), "kabar chat quits")
            body3 = "While kabar was off 5b3a"
            tmux.keys("prof", body3)
            ok, text = tmux.wait("prof", body3, timeout=STEP)
            R.check(ok, "profanity shows its third message")
            out = ""
            for _ in range(25):  # the archive's write is not instant: until it is there
                r = k.run("history", bob, user="alice")
                out = r.stdout
                if body3 in out:
                    break
                time.sleep(0.2)
            R.check(r.returncode == 0 and f"me: {body3}" in out,
                    f"kabar history {bob} has it as 'me' ({r.returncode}: {out!r} "
                    f"{r.stderr.strip()})")
            R.check(f"me: {body2}" in out and f"{bob}: {body1}" in out,
                    "and the earlier two, each from its sender")

            # kabar chat again: the sent carbon it got is in its local history as "me", and what
            # Profanity sent while it was off comes from the server's archive (the gap filled),
            # each once: what the local history has already is not shown twice.
            tmux.start("kchat", f"{binary} chat", e)
            ok, text = tmux.wait("kchat", f"online as {alice}", timeout=STEP)
            R.check(ok, "kabar chat starts again")
            ok, text = tmux.wait("kchat", f"me: {body2}", timeout=STEP)
            R.check(ok and f"bob: {body1}" in text,
                    "its local history has Profanity's message to bob as 'me'\n" + text)
            ok, text = tmux.wait("kchat", f"me: {body3}", timeout=STEP)
            R.check(ok, "the message sent while it was off shows as 'me' (from the archive)\n"
                    + text)
            R.check(text.count(body1) == 1 and text.count(body2) == 1 and text.count(body3) == 1,
                    "each message once\n" + text)
            for n, body in enumerate((body1, body2, body3)):
                R.check(text.find(body) > text.find((body1, body2, body3)[n - 1]) if n else True,
                        f"in the order they were sent ({body})")
            tmux.keys("kchat", "/quit")
            deadline = time.time() + STEP
            while tmux.alive("kchat") and time.time() < deadline:
                time.sleep(0.1)
            # A third time: the filled message is now in the local history, once.
            tmux.start("kchat", f"{binary} chat", e)
            ok, text = tmux.wait("kchat", f"me: {body3}", timeout=STEP)
            R.check(ok, "a third start shows it from the local history\n" + text)
            time.sleep(1)  # the archive's answer to this start's query, if it added anything
            text = tmux.capture("kchat")
            R.check(text.count(body1) == 1 and text.count(body2) == 1 and text.count(body3) == 1,
                    "still each message once\n" + text)
            tmux.keys("kchat", "/quit")
            text = tmux.capture("prof")
            R.check(CARBONS_ERROR not in text, f'no "{CARBONS_ERROR}" in Profanity')
            tmux.keys("prof", "/quit")
            R.check(srv.alive(), "kabard still running at the end")
    finally:
        tmux.kill()
        if R.failed:
            log = os.path.join(home, ".local", "share", "profanity", "logs", "profanity.log")
            try:
                with open(log) as f:
                    sys.stderr.write("---- profanity log (tail) ----\n" + f.read()[-4000:] + "\n")
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
