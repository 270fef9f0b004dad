"""kabard's command line: clear one-line errors and non-zero exits for a bad configuration, a
port in use and a bad flag; the --help text names every flag; and a configuration file's keys
take effect (flags override the file)."""
import os
import socket
import subprocess
import tempfile
import time

import kabartest


def run(cmd, timeout=20):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabard_cli")
    tmp = tempfile.mkdtemp(prefix="kabar-cli-")

    h = run([args.kabard, "--help"])
    R.check(h.returncode == 0, "--help exits 0")
    for flag in ["--domain", "--data-dir", "--c2s", "--c2s-tls", "--allow-registration",
                 "--allow-plaintext", "--config"]:
        R.check(flag in h.stdout, f"--help documents {flag}")

    # A port in use: exit 1 (cannot start) with a message that says which address.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    r = run([args.kabard, "--domain", "localhost", "--data-dir", os.path.join(tmp, "d1"),
             "--c2s", f"127.0.0.1:{port}"])
    R.check(r.returncode == 1, f"port in use: exit 1, as kabard(8) says ({r.returncode})")
    R.check(f"127.0.0.1:{port}" in r.stderr and "in use" in r.stderr.lower(),
            "port in use: the message names the address and the cause: " + r.stderr.strip()[-200:])
    busy.close()

    # Bad configuration files.
    cases = {
        "unknown key": 'domian = "x"\n',
        "bad TOML": 'domain = \n',
        "wrong type": 'allow_plaintext = "yes"\n',
        "bad endpoint": '[listen]\nc2s = "nohost"\n',
        "too few SCRAM iterations": '[limits]\nscram_iterations = 10\n',
    }
    for what, text in cases.items():
        path = os.path.join(tmp, "bad.toml")
        with open(path, "w") as f:
            f.write(text)
        r = run([args.kabard, "--config", path, "--data-dir", os.path.join(tmp, "d2"),
                 "--c2s", "127.0.0.1:0"])
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        R.check(r.returncode == 2 and len(lines) == 1 and lines[0].startswith("kabard: "),
                f"bad config ({what}): exit 2 with one line: {r.stderr.strip()!r}")
    r = run([args.kabard, "--config", os.path.join(tmp, "missing.toml")])
    R.check(r.returncode != 0, "a missing config file is refused")
    r = run([args.kabard, "--domain", "bad domain!", "--c2s", "127.0.0.1:0",
             "--data-dir", os.path.join(tmp, "d3")])
    R.check(r.returncode == 2 and "not a valid domain" in r.stderr, "an invalid domain is refused")
    r = run([args.kabard, "--c2s", "127.0.0.1:99999", "--data-dir", os.path.join(tmp, "d4")])
    R.check(r.returncode == 2, "an invalid port is refused")
    r = run([args.kabard, "--no-such-flag"])
    R.check(r.returncode == 2, "an unknown flag is refused with exit 2")

    # A config file's keys take effect; flags override it.
    cfg = ('domain = "file.example"\nallow_registration = true\n'
           '[limits]\nauth_timeout = 2\n')
    with kabartest.Kabard(args, domain="localhost", allow_registration=False, config=cfg) as k:
        s = socket.create_connection(("127.0.0.1", k.port))
        s.settimeout(5)
        s.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
                  b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
        data = b""
        while b"</stream:features>" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        R.check(b"from='localhost'" in data, "--domain overrides the file's domain")
        # auth_timeout = 2 from the file: an idle unauthenticated stream is closed.
        t0 = time.monotonic()
        while True:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        elapsed = time.monotonic() - t0
        R.check(b"connection-timeout" in data and elapsed < 5,
                f"auth_timeout from the file closes an idle stream ({elapsed:.1f}s)")
        s.close()
        log = k.read_log()
        R.check("in-band registration on" in log, "allow_registration from the file takes effect")
        R.check("open-file limit" in log, "kabard reports its open-file limit")
        R.check(f"127.0.0.1:{k.port}" in log, "kabard logs the address it listens on")
    R.finish()


if __name__ == "__main__":
    main()
