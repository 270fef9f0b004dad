"""Smoke run of kabar-bench against kabard (plain TCP with --allow-plaintext), so the load tool
and the benchmark path keep working: accounts made with kabarctl, rosters filled by the tool,
then logins with SCRAM and with PLAIN, a short message-rate run (also with stream management on
every connection), idle connections over direct TLS,
and a few seconds of logins and presence churn. Checks only that messages are delivered and that
nothing errs; the figures themselves belong to `make bench`. Then kabar-call-bench (the call media
engine's CPU bench) for a two-second call with small video.
"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kabartest import Kabard, Results, parse_args  # noqa: E402

USERS = 20
CONTACTS = 4


def bench(tool, kd, *argv, tls_port=False, timeout=60):
    port = kd.tls_port if tls_port else kd.port
    cmd = [tool, "--port", str(port), "--domain", kd.domain, "--users", str(USERS),
           "--contacts", str(CONTACTS), "--password", "secret", "--sources", "4", *argv]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0:
        sys.stderr.write(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}\n")
    return r.returncode, lines


def main():
    args = parse_args()
    tool = os.path.join(os.path.dirname(args.kabard), "kabar-bench")
    res = Results("bench_smoke")
    if not res.check(os.access(tool, os.X_OK), f"kabar-bench beside kabard ({tool})"):
        res.finish()
    with Kabard(args, allow_plaintext=True, allow_registration=True) as kd:
        for i in range(USERS // 2):
            kd.add_user(f"u{i}", "secret")
        # The other half by in-band registration, as the tool does for Prosody and ejabberd.
        rc, out = bench(tool, kd, "--mode", "register", "--first", str(USERS // 2), "--users",
                        str(USERS // 2))
        res.check(rc == 0 and out and out[-1]["registered"] == USERS // 2,
                  "in-band registration of the other accounts")
        pid = str(kd.proc.pid)

        rc, out = bench(tool, kd, "--mode", "subscribe", "--rates", "500")
        res.check(rc == 0 and out and out[-1]["approved"] == USERS * CONTACTS,
                  f"rosters filled: {out[-1] if out else None}")

        for mech in ("scram-sha-256", "plain"):
            # Both steps run whatever the latency: this checks that the tool and the path work,
            # not how fast they are on a shared machine (that is `make bench`'s job).
            rc, out = bench(tool, kd, "--mode", "messages", "--mech", mech, "--rates", "200,400",
                            "--warmup", "1", "--measure", "4", "--server-pid", pid,
                            "--no-stop", "--label", f"smoke-{mech}")
            summary = out[-1] if out else {}
            steps = [x for x in out if "step" in x]
            res.check(rc == 0 and summary.get("errors") == 0, f"{mech}: no errors ({summary})")
            res.check(summary.get("received", 0) > 0 and summary.get("lost", 1) == 0,
                      f"{mech}: messages delivered ({summary.get('received')})")
            res.check(len(steps) == 2 and all(s["delivered"] > 0 for s in steps),
                      f"{mech}: both rate steps delivered")
            res.check(all(s["server_cpu_s"] >= 0 and s["server_rss_kib"] > 0 for s in steps),
                      f"{mech}: server CPU and RSS sampled")

        # Stream management on every connection (the sm scenario of bench/run): acks are asked
        # for and answered, and nothing is lost or errs.
        rc, out = bench(tool, kd, "--mode", "messages", "--rates", "200", "--warmup", "1",
                        "--measure", "3", "--sm", "--sm-every", "5", "--server-pid", pid,
                        "--no-stop", "--label", "smoke-sm")
        summary = out[-1] if out else {}
        res.check(rc == 0 and summary.get("errors") == 0 and summary.get("lost", 1) == 0 and
                  summary.get("received", 0) > 0, f"sm: messages delivered, no errors ({summary})")
        res.check(summary.get("sm") is True and summary.get("sm_acks", 0) > 0 and
                  summary.get("sm_requests", 0) > 0,
                  "sm: kabard answered the tool's <r/> and asked for acks itself")

        rc, out = bench(tool, kd, "--mode", "idle", "--resources", "5", "--hold", "1",
                        "--tls", "direct", "--server-pid", pid, tls_port=True)
        res.check(rc == 0 and out and out[-1]["connections"] == USERS * 5,
                  f"idle connections over TLS: {out[-1] if out else None}")

        rc, out = bench(tool, kd, "--mode", "logins", "--duration", "2", "--concurrency", "8",
                        "--server-pid", pid)
        res.check(rc == 0 and out and out[-1]["logins"] > 0, f"logins: {out[-1] if out else None}")

        rc, out = bench(tool, kd, "--mode", "presence", "--duration", "2", "--churn", "10",
                        "--server-pid", pid)
        res.check(rc == 0 and out and out[-1]["cycles"] > 0 and out[-1]["presence_per_s"] > 0,
                  f"presence churn: {out[-1] if out else None}")
        res.check(kd.alive(), "kabard still running")

    # kabar-call-bench (bench/call_media; bench/call_browser/run compares it with Chromium): a
    # two-second call with small video, both ends decoding.
    call_bench = os.path.join(os.path.dirname(args.kabard), "kabar-call-bench")
    if os.access(call_bench, os.X_OK):
        r = subprocess.run([call_bench, "--seconds", "2", "--video", "160x120@15"],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"cpu \(user\+sys\): ([\d.]+) s per call-minute", r.stdout)
        frames = re.search(r"video frames decoded a (\d+) b (\d+)", r.stdout)
        res.check(r.returncode == 0 and m is not None and float(m.group(1)) > 0 and
                  frames is not None and min(map(int, frames.groups())) >= 15,
                  f"kabar-call-bench: a call with video ({r.stdout.strip()} "
                  f"{r.stderr.strip()[-300:]})")
    res.finish()


if __name__ == "__main__":
    main()
