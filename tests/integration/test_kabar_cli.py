"""The command lines of all four binaries: `--version` on each (the CMake project version, from one
place); kabard exits 2 on every command-line error; kabarctl finds kabard's default data
directory (`data`) without --data-dir; `kabar send JID WORDS...` sends the words as one message,
and `kabar send JID` with no text sends what standard input holds (here more than one argument
may hold).

Run: /usr/bin/python3 test_kabar_cli.py --kabard PATH --kabarctl PATH
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402


def run(argv, timeout=30, **kw):
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def project_version():
    with open(os.path.join(HERE, "..", "..", "CMakeLists.txt")) as f:
        return re.search(r"project\(kabar VERSION ([0-9.]+)", f.read()).group(1)


def check_versions(R, args):
    bindir = os.path.dirname(os.path.abspath(args.kabard))
    want = project_version()
    for name in ("kabar", "kabard", "kabarctl", "kabar-bench"):
        r = run([os.path.join(bindir, name), "--version"])
        lines = r.stdout.splitlines()
        R.check(r.returncode == 0 and len(lines) == 1 and lines[0].startswith(f"{name} {want}"),
                f"{name} --version: exit 0, one line naming version {want}: {r.stdout!r}")
        r = run([os.path.join(bindir, name), "--help"])
        R.check(r.returncode == 0 and "--version" in r.stdout, f"{name} --help names --version")


def check_kabard_usage_errors(R, args, tmp):
    cases = {
        "an unknown flag": ["--no-such-flag"],
        "a flag without its value": ["--domain"],
        "a value that is not a number": ["--threads", "many"],
        "a number out of range": ["--threads", "0"],
        "a missing config file": ["--config", os.path.join(tmp, "missing.toml")],
        "an unexpected argument": ["serve"],
    }
    for what, argv in cases.items():
        r = run([args.kabard, "--data-dir", os.path.join(tmp, "unused"), *argv])
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        R.check(r.returncode == 2 and len(lines) == 1 and lines[0].startswith("kabard: "),
                f"kabard with {what}: exit 2 and one line: {r.stderr.strip()!r}")
    R.check(not os.path.exists(os.path.join(tmp, "unused")),
            "kabard creates no data directory when its command line is wrong")


def check_kabarctl_default_dir(R, args, tmp):
    """kabarctl and kabard started in the same directory without --data-dir share ./data."""
    kabarctl, kabard = os.path.abspath(args.kabarctl), os.path.abspath(args.kabard)
    cwd = os.path.join(tmp, "site")
    os.makedirs(cwd)
    env = dict(os.environ, KABAR_PASSWORD="Alice-Secret-1")
    r = run([kabarctl, "user", "list"], cwd=cwd)
    R.check(r.returncode == 1 and "data" in r.stderr,
            f"kabarctl without --data-dir and no ./data: exit 1 naming it: {r.stderr.strip()!r}")
    r = run([kabarctl, "user", "add", "alice"], cwd=cwd, env=env)
    R.check(r.returncode == 0 and os.path.exists(os.path.join(cwd, "data", "kabar.db")),
            f"kabarctl user add without --data-dir creates ./data/kabar.db ({r.stderr.strip()})")
    r = run([kabarctl, "user", "list"], cwd=cwd)
    R.check(r.returncode == 0 and r.stdout.split() == ["alice"], "kabarctl user list finds alice")
    port = kabartest.free_port()
    log = open(os.path.join(tmp, "kabard-default.log"), "w")
    proc = subprocess.Popen([kabard, "--c2s", f"127.0.0.1:{port}"], cwd=cwd, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        k = client_matrix.Kabar(client_matrix.kabar_binary(args), port, "localhost", tmp)
        r = None
        deadline = time.time() + 20
        while time.time() < deadline:
            r = k.run("roster", user="alice")
            if r.returncode != 4:  # 4: not listening yet
                break
            time.sleep(0.1)
        R.check(r is not None and r.returncode == 0,
                f"kabard without --data-dir serves the account kabarctl made ({r and r.stderr.strip()})")
    finally:
        proc.send_signal(signal.SIGTERM)
        R.check(proc.wait(timeout=15) == 0, "kabard (default data directory) stops cleanly")
        log.close()


def check_send(R, args, tmp):
    with kabartest.Kabard(args) as srv:
        for user, pw in client_matrix.PASSWORDS.items():
            srv.add_user(user, pw)
        k = client_matrix.Kabar(client_matrix.kabar_binary(args), srv.port, srv.domain, tmp)
        bob = f"bob@{srv.domain}"
        li = k.listen("bob")
        try:
            R.check(li.wait(lambda e: e.get("type") == "ready") is not None, "bob listens")
            r = k.run("send", bob, "hello", "there", "world", user="alice")
            R.check(r.returncode == 0, f"kabar send JID WORDS...: exit 0 ({r.stderr.strip()})")
            ev = li.wait(lambda e: e.get("type") == "message")
            R.check(ev is not None and ev.get("body") == "hello there world",
                    f"the words arrive as one message: {ev and ev.get('body')!r}")

            # 200 KB: more than one command-line argument may hold (128 KiB on Linux).
            text = "".join(f"line {i} of a long text, ünïcödé included\n" for i in range(5000))
            assert len(text.encode()) > 200_000
            r = run([k.binary, "send", bob], env=k.env("alice"), input=text)
            R.check(r.returncode == 0, f"kabar send JID < file: exit 0 ({r.stderr.strip()[:200]})")
            ev = li.wait(lambda e: e.get("type") == "message" and e.get("body", "").startswith("line 0"))
            R.check(ev is not None and ev.get("body") == text[:-1],
                    "the message from standard input arrives whole (its final newline dropped)")

            r = run([k.binary, "send", bob], env=k.env("alice"), input="")
            R.check(r.returncode == 2 and "no message" in r.stderr,
                    f"kabar send JID with nothing on standard input: exit 2 ({r.stderr.strip()})")
        finally:
            li.stop()


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_cli")
    tmp = tempfile.mkdtemp(prefix="kabar-cli-")
    try:
        R.section(check_versions)(R, args)
        R.section(check_kabard_usage_errors)(R, args, tmp)
        R.section(check_kabarctl_default_dir)(R, args, tmp)
        R.section(check_send)(R, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
