#!/usr/bin/python3
"""Calls in `kabar chat` (in tmux), against `kabar listen --answer-calls` and `kabar call` on
loopback through kabard:
- /call rings bob, who answers: the status line shows "in call with bob ... 0:0N, lost N%",
  counting; /hangup ends it and the conversation says so with the figures;
- bob calls: the screen says "call from ...: /answer or /reject"; /answer takes it and bob's
  `kabar call --duration 2` exits 0; /reject declines the next one and bob's exits 8;
- /quit: the chat exits 0 (under ASan: no leak).

Run: /usr/bin/python3 test_kabar_chat_call.py --kabard PATH --kabarctl PATH
"""
import os
import re
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

LOOP = ("--host-address", "127.0.0.1")


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_chat_call")
    tmp = tempfile.mkdtemp(prefix="kabar-chat-call-")
    tmux = Tmux(tmp)
    listener = caller = None
    try:
        with client_matrix.kabard_with_kabar(args, tmp) as (srv, k):
            alice, bob = k.befriend(R)
            listener = k.listen("bob", "--answer-calls", *LOOP)
            R.check(listener.wait(lambda e: e.get("type") == "ready") is not None, "bob listens")

            e = k.terminal_env("alice")
            heard = os.path.join(tmp, "alice-heard.wav")
            exit_file = os.path.join(tmp, "chat-exit")
            tmux.start("alice", f"sh -c '{k.binary} chat --host-address 127.0.0.1 --audio-out "
                       f"{heard}; echo $? > {exit_file}'", e)
            ok, text = tmux.wait("alice", f"{bob} - online")
            R.check(ok, "alice's chat shows bob online\n" + text)

            # alice calls bob, who answers.
            tmux.keys("alice", "/call")
            ok, text = tmux.wait("alice", f"[in call with {bob}/", timeout=20)
            R.check(ok, "/call: the status line says the call is up\n" + text)
            ok, text = tmux.wait("alice", "0:02, lost ", timeout=10)
            R.check(ok and re.search(r"in call with \S+ 0:02, lost \d+\.\d%", text) is not None,
                    "the status line counts the call's duration and shows the loss\n" + text)
            tmux.keys("alice", "/hangup")
            ok, text = tmux.wait("alice", "ended: success, by us, after 0:0")
            R.check(ok and "packets sent" in text and "[in call" not in text,
                    "/hangup ends it; the conversation has the figures\n" + text)
            ev = listener.wait(lambda e: e.get("type") == "call-ended", timeout=10)
            R.check(ev is not None and ev.get("reason") == "success" and ev.get("by") == "peer",
                    f"bob's side ends, hung up by alice: {ev}")
            listener.stop()
            listener = None

            # bob calls alice: /answer.
            caller = subprocess.Popen([k.binary, "call", alice, "--duration", "2",
                                       "--ring-timeout", "30", *LOOP],
                                      env=k.env("bob"), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
            ok, text = tmux.wait("alice", "/answer or /reject", timeout=20)
            R.check(ok and f"call from {bob}/" in text, "a call rings on alice's screen\n" + text)
            tmux.keys("alice", "/answer")
            out, err = caller.communicate(timeout=30)
            R.check(caller.returncode == 0 and
                    re.search(r"ended: success, by us, after 0:0[234];", out) is not None,
                    f"/answer: bob's call connects and he hangs up after 2 s ({out} {err})")
            ok, text = tmux.wait("alice", "ended: success, by the contact")
            R.check(ok, "alice's screen says bob hung up\n" + text)

            # bob calls again: /reject.
            caller = subprocess.Popen([k.binary, "call", alice, "--ring-timeout", "30", *LOOP],
                                      env=k.env("bob"), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
            ok, text = tmux.wait("alice", f"[call from {bob}/", timeout=20)
            R.check(ok, "the second call rings\n" + text)
            tmux.keys("alice", "/reject")
            out, err = caller.communicate(timeout=30)
            R.check(caller.returncode == 8 and "ended: decline, by the contact" in out,
                    f"/reject: bob's call is declined, exit 8 ({out} {err})")
            tmux.keys("alice", "/quit")
            deadline = time.time() + 10
            while not os.path.exists(exit_file) and time.time() < deadline:
                time.sleep(0.1)  # a poll interval
            code = open(exit_file).read().strip() if os.path.exists(exit_file) else None
            R.check(code == "0", f"/quit: kabar chat exits 0 (exit {code})")
    finally:
        tmux.kill()
        for p in (caller,):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if listener:
            listener.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
