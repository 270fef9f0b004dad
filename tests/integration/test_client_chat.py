"""`kabar chat` driven in tmux against kabard: alice and bob (mutual contacts) each run the
full-screen chat in a fixed-size pane; each sees the other come online; they exchange messages
(with in-line editing on the way), see them on screen with the delivery mark and unread counts,
send a file with /file (bob is asked and accepts, then declines a second one), and quit
cleanly with /quit.

Run: /usr/bin/python3 test_client_chat.py --kabard PATH --kabarctl PATH
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


class Tmux:
    """A private tmux server (own socket) with one fixed-size session per user."""

    def __init__(self, workdir):
        self.sock = os.path.join(workdir, "tmux.sock")
        self.started = False

    def run(self, *argv, check=True):
        return subprocess.run(["tmux", "-S", self.sock, *argv], capture_output=True, text=True,
                              check=check, stdin=subprocess.DEVNULL, timeout=10)

    def start(self, name, command, env):
        envargs = []
        for k, v in env.items():
            envargs += ["-e", f"{k}={v}"]
        self.run("new-session", "-d", "-s", name, "-x", "120", "-y", "30", *envargs, command)
        self.started = True

    def keys(self, name, text, enter=True):
        if text:
            self.run("send-keys", "-t", name, "-l", text)
        if enter:
            self.run("send-keys", "-t", name, "Enter")

    def key(self, name, *keys):
        self.run("send-keys", "-t", name, *keys)

    def capture(self, name):
        r = self.run("capture-pane", "-p", "-t", name, check=False)
        return r.stdout if r.returncode == 0 else ""

    def alive(self, name):
        return self.run("has-session", "-t", name, check=False).returncode == 0

    def wait(self, name, needle, timeout=10):
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            text = self.capture(name)
            if needle in text:
                return True, text
            time.sleep(0.15)
        return False, text

    def kill(self):
        if self.started:
            self.run("kill-server", check=False)
            self.started = False


def main():
    args = kabartest.parse_args()
    res = kabartest.Results("test_client_chat")
    binary = client_matrix.kabar_binary(args)
    work = tempfile.mkdtemp(prefix="kabar-chat-")
    tmux = Tmux(work)
    try:
        with kabartest.Kabard(args) as srv:
            k = client_matrix.Kabar(binary, srv.port, srv.domain, work)
            alice, bob = f"alice@{srv.domain}", f"bob@{srv.domain}"
            for user, jid in (("alice", alice), ("bob", bob)):
                r = k.run("register", jid, user=user)
                res.check(r.returncode == 0, f"register {user} ({r.stderr.strip()})")
            for user, argv in (("alice", ("add", bob)), ("bob", ("approve", alice)),
                               ("alice", ("approve", bob))):
                r = k.run("roster", *argv, user=user)
                res.check(r.returncode == 0, f"{user}: roster {' '.join(argv)}")

            envs = {}
            for user in ("alice", "bob"):
                e = k.env(user)
                e = {kk: v for kk, v in e.items()
                     if kk.startswith("KABAR_") or kk in ("HOME", "PATH")}
                e["LANG"] = "C.UTF-8"
                envs[user] = e
            tmux.start("alice", f"{binary} chat", envs["alice"])
            ok, text = tmux.wait("alice", f"online as {alice}")
            res.check(ok, "alice's chat connects and says so")
            res.check(f"[ ] {bob}" in text, "alice's contact list shows bob offline")
            tmux.start("bob", f"{binary} chat", envs["bob"])
            ok, text = tmux.wait("bob", f"[+] {alice}")
            res.check(ok, "bob's contact list shows alice online")
            ok, text = tmux.wait("alice", f"[+] {bob}")
            res.check(ok, "alice sees bob come online")
            res.check(f"{bob} - online" in text, "alice's conversation header: bob, online")

            # Alice types with a typo and fixes it in the input line before sending.
            tmux.keys("alice", "hllo bob, ça va?", enter=False)
            tmux.key("alice", "Home")
            tmux.key("alice", "Right")
            tmux.keys("alice", "e", enter=False)
            ok, _ = tmux.wait("bob", "(typing...)", timeout=5)
            res.check(ok, "bob sees alice typing (XEP-0085)")
            tmux.keys("alice", "")
            ok, text = tmux.wait("bob", "alice: hello bob, ça va?")
            res.check(ok, "bob's screen shows alice's message, edited and in UTF-8")
            ok, text = tmux.wait("alice", "me: hello bob, ça va? ✓")
            res.check(ok, "alice's screen shows her message delivered (XEP-0184 receipt)")

            tmux.keys("bob", "très bien, merci")
            ok, text = tmux.wait("alice", "bob: très bien, merci")
            res.check(ok, "alice's screen shows bob's reply")

            # A message from an account not selected counts as unread.
            r = k.run("register", f"carol@{srv.domain}", user="carol", password="Carol-Pw-9")
            r = k.run("send", alice, "hi from carol", user="carol", password="Carol-Pw-9")
            res.check(r.returncode == 0, "carol sends alice a message")
            ok, text = tmux.wait("alice", f"carol@{srv.domain} (1)")
            res.check(ok, "alice's contact list shows one unread from carol")
            tmux.keys("alice", f"/to carol@{srv.domain}")
            ok, text = tmux.wait("alice", "carol: hi from carol")
            res.check(ok and f"carol@{srv.domain} (1)" not in text,
                      "switching to carol shows her message and clears the unread count")

            # A file from alice's chat to bob's: bob is asked, accepts, both see the outcome.
            photo = os.path.join(work, "photo.jpg")
            data = os.urandom(300 * 1024)
            with open(photo, "wb") as f:
                f.write(data)
            tmux.keys("alice", f"/to {bob}")
            tmux.keys("alice", f"/file {photo}")
            ok, text = tmux.wait("bob", "offers photo.jpg (307200 bytes): /accept or /decline")
            res.check(ok, "bob's chat shows alice's file offer and asks")
            tmux.keys("bob", "/accept")
            ok, text = tmux.wait("bob", "received ")
            res.check(ok and "hash checked" in text, "bob's chat: received, hash checked")
            ok, text = tmux.wait("alice", "sent " + photo)
            res.check(ok, "alice's chat: sent")
            got = os.path.join(envs["bob"]["HOME"], "Downloads", "photo.jpg")
            res.check(os.path.isfile(got) and open(got, "rb").read() == data,
                      "the file is in bob's ~/Downloads, the same bytes")
            before = tmux.capture("bob").count("offers photo.jpg")
            tmux.keys("alice", f"/file {photo}")
            deadline = time.time() + 10
            while time.time() < deadline and tmux.capture("bob").count("offers photo.jpg") <= before:
                time.sleep(0.15)
            tmux.keys("bob", "/decline")
            ok, text = tmux.wait("alice", "sending failed")
            res.check(ok and "declined" in text, "a declined offer: alice's chat says so")

            panes = tmux.capture("alice") + tmux.capture("bob")
            res.check(all(p not in panes for p in client_matrix.PASSWORDS.values()),
                      "no password on screen")
            for user in ("alice", "bob"):
                tmux.keys(user, "/quit")
            deadline = time.time() + 8
            while time.time() < deadline and (tmux.alive("alice") or tmux.alive("bob")):
                time.sleep(0.1)
            res.check(not tmux.alive("alice") and not tmux.alive("bob"), "/quit ends both chats")
    except Exception as e:
        res.check(False, f"harness: {e}")
    finally:
        tmux.kill()
        shutil.rmtree(work, ignore_errors=True)
    res.finish()


if __name__ == "__main__":
    main()
