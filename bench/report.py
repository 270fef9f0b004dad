"""Turns bench/run's JSON lines into bench/results/YYYY-MM-DD.md: kabard, the floor, Prosody and
ejabberd side by side, kabard's ratios, the issue #7 targets met or missed (issue 17's with
ARCHIVE=on), each server's archive backend and rows, and the per-step data.

usage: report.py RESULTS.jsonl OUT.md
"""
import json
import statistics
import sys

SERVERS = ["kabard", "floor", "prosody", "ejabberd"]
NAMES = {"kabard": "kabard", "floor": "floor", "prosody": "Prosody", "ejabberd": "ejabberd"}


def load(path):
    meta, recs = {}, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("meta"):
                meta = r
            else:
                recs.append(r)
    return meta, recs


def fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b, inverse=False):
    if a is None or b is None or a == 0 or b == 0:
        return "–"
    r = b / a if inverse else a / b
    return f"{r:.2f}x"


class Server:
    def __init__(self, name, recs):
        mine = [r for r in recs if r.get("server") == name]
        self.name = name
        self.started = not any(r.get("scenario") == "start" and r.get("failed") for r in mine)
        self.steps = [r for r in mine if r.get("scenario") == "throughput" and "step" in r]
        self.ladder = next((r for r in mine if r.get("scenario") == "throughput" and
                            r.get("summary")), None)
        self.perf = next((r for r in mine if r.get("scenario") == "perf" and "step" in r), None)
        self.sm_steps = [r for r in mine if r.get("scenario") == "sm" and "step" in r]
        self.logins = next((r for r in mine if r.get("scenario") == "logins"), None)
        self.presence = next((r for r in mine if r.get("scenario") == "presence"), None)
        self.memory = {r.get("tls"): r for r in mine if r.get("scenario") == "memory"}
        self.setup = [r for r in mine if r.get("scenario") == "setup"]
        self.tsung_steps = [r for r in mine if r.get("scenario") == "tsung" and "step" in r]
        self.tsung = next((r for r in mine if r.get("scenario") == "tsung" and r.get("summary")),
                          None)
        # Paired scenario: {offered: [step of round 1, round 2, ...]}
        self.paired = {}
        for r in mine:
            if str(r.get("scenario", "")).startswith("paired-") and "step" in r:
                self.paired.setdefault(r["offered"], []).append(r)
        self.all = mine

    def per_cpu(self, step):
        if not step or not step.get("server_cpu_s"):
            return None
        return step["delivered"] / step["server_cpu_s"]

    def best(self):
        ok = [s for s in self.steps if s.get("pass")]
        return max(ok, key=lambda s: s["delivered_per_s"]) if ok else None

    def at_rate(self, rate):
        return next((s for s in self.steps if s["offered"] == rate), None)

    def near(self, rate):
        if not self.steps:
            return None
        return min(self.steps, key=lambda s: abs(s["offered"] - rate))

    def sm_best(self):
        ok = [s for s in self.sm_steps if s.get("pass")]
        return max(ok, key=lambda s: s["delivered_per_s"]) if ok else None

    def sm_at(self, rate):
        return next((s for s in self.sm_steps if s["offered"] == rate), None)

    def mem(self, tls):
        r = self.memory.get(tls)
        if not r or r.get("connections", 0) < r.get("target", 1):
            return None if not r else r.get("bytes_per_conn")
        return r.get("bytes_per_conn")

    def perf_per_msg(self, key):
        p = self.perf
        if not p or p.get(key, -1) < 0 or not p.get("delivered"):
            return None
        # Messages pass the server once each: count per delivered message.
        return p[key] / p["delivered"]

    def tsung_at(self, rate):
        return next((r for r in self.tsung_steps if r.get("offered") == rate and
                     not r.get("failed")), None)

    def tsung_per_cpu(self, rate):
        st = self.tsung_at(rate)
        return st and st.get("msgs_per_cpu_s")

    def ctx_per_msg(self, step):
        if not step or not step.get("delivered"):
            return None
        return step["server_ctx_switches"] / step["delivered"]


def tsung_section(w, S, present, rates):
    """The throughput scenario driven by Debian's tsung (bench/tsung/run-tsung)."""
    if not rates and not any(S[n].tsung for n in present):
        return
    w("## Tsung (the throughput scenario driven by Debian's tsung)")
    w("")
    w("The same 1,000 accounts with their 10-contact rosters log in from Debian's tsung 1.7.0 "
      "(SASL PLAIN, bind, session, roster get, initial presence; pinned to CPU 1 like "
      "kabar-bench); once all are online, each sends chat messages to online users (tsung's "
      "round-robin over its online list) with exponential think times, so the offered total is a "
      "Poisson stream at each rate in turn (2 s warm-up + 8 s measured per rate). Deliveries are "
      "counted by a patched copy of tsung's `ts_jabber.erl` compiled at run time "
      "(`bench/tsung/`): every stamp in every read, by the window its send time falls in; "
      "server CPU time is read from `/proc` at the window edges. \"ours\" latency percentiles "
      "come from those stamps. tsung's own latency figure (the mean of its `xmpp_msg_latency` "
      "samples in the 1 s dumps falling inside the window) takes one sample per TCP read, so "
      "messages that arrive together in one read count once: it undercounts batched deliveries "
      "(see reads with a stamp against deliveries below) and is shown only beside ours. "
      "Rates stop at what tsung generates from its one CPU: against the floor it sent about "
      "3,500-3,800 msg/s when asked for 4,000 (and its own queueing showed in the latency), so "
      "3,000 msg/s is the highest rate run here.")
    w("")
    w("| server | offered msg/s | sent/s | delivered/s | server CPU s | msgs/CPU-s | p50 ms "
      "(ours) | p99 ms (ours) | tsung's mean ms (samples) | pass |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for n in present:
        for st in S[n].tsung_steps:
            if st.get("failed"):
                w(f"| {NAMES[n]} | {st['offered']:,.0f} | – | – | – | – | – | – | – | "
                  f"not reached ({st.get('why', '?')}) |")
                continue
            tsung_mean = (f"{fmt(st.get('tsung_mean_ms'), 2)} ({st.get('tsung_samples', 0):,})"
                          if st.get("tsung_mean_ms") is not None else "–")
            verdict = "yes" if st.get("pass") else (
                "no (tsung fell behind)" if st.get("tool_limited") else "no")
            w(f"| {NAMES[n]} | {st['offered']:,.0f} | {fmt(st.get('sent_per_s'))} | "
              f"{fmt(st.get('delivered_per_s'))} | {fmt(st.get('server_cpu_s'), 2)} | "
              f"{fmt(st.get('msgs_per_cpu_s'))} | {fmt(st.get('p50_ms'), 2)} | "
              f"{fmt(st.get('p99_ms'), 2)} | {tsung_mean} | {verdict} |")
    w("")
    others = [n for n in ("floor", "prosody", "ejabberd") if n in present]
    k = S["kabard"]
    if k.tsung_steps and others:
        w("kabard's ratios under tsung:")
        w("")
        w("| | " + " | ".join(f"kabard / {NAMES[n]}" for n in others) + " |")
        w("|---|" + "---|" * len(others))
        for rate in rates:
            w(f"| msgs per server CPU-second at {rate:,.0f} msg/s | " + " | ".join(
                ratio(k.tsung_per_cpu(rate), S[n].tsung_per_cpu(rate)) for n in others) + " |")
        w("")
    w("| server | users online | login s | messages sent / delivered (whole run) | reads with "
      "a stamp (tsung's samples) | message errors | tsung errors |")
    w("|---|---|---|---|---|---|---|")
    for n in present:
        t = S[n].tsung
        if not t:
            continue
        if t.get("failed"):
            w(f"| {NAMES[n]} | – | – | – | – | – | {t.get('why', 'failed')} |")
            continue
        terr = ", ".join(f"{k2} x{v}" for k2, v in t.get("tsung_errors", {}).items()) or "0"
        w(f"| {NAMES[n]} | {t.get('online')}/{t.get('users')} | {fmt(t.get('login_s'), 1)} | "
          f"{t.get('sent_total', 0):,} / {t.get('delivered_total', 0):,} | "
          f"{t.get('tsung_latency_samples_total', 0):,} | {t.get('message_errors', 0):,} | "
          f"{terr} |")
    w("")


def archive_section(w, meta, recs, present):
    """ARCHIVE's value, each server's archive backend and the rows counted in it after its
    scenarios, against the messages the load sent it (each should be archived twice: in the
    sender's and the recipient's archive)."""
    arch = {r["server"]: r for r in recs if r.get("scenario") == "archive"}
    if not meta.get("archive") and not arch:
        return
    w(f"ARCHIVE={meta.get('archive', '?')} (bench/run: on = every server with an archive "
      "archives every message, off = none does).")
    w("")
    w("| server | archive backend | rows in its archive after its scenarios | messages sent / "
      "delivered by the load | rows per message delivered |")
    w("|---|---|---|---|---|")
    for n in present:
        a = arch.get(n)
        if not a:
            continue
        sent = received = 0
        for r in recs:
            if r.get("server") != n or str(r.get("scenario", "")).startswith("paired-"):
                continue
            if r.get("summary") and r.get("mode") == "messages":
                sent += r.get("sent", 0)
                received += r.get("received", 0)
            elif r.get("summary") and r.get("scenario") == "tsung":
                sent += r.get("sent_total", 0)
                received += r.get("delivered_total", 0)
        rows = a.get("rows")
        backend = a["backend"]
        if a.get("journal_mode"):
            backend += f" (journal_mode {a['journal_mode']}"
            backend += f", on {a['fs']})" if a.get("fs") else ")"
        if a.get("why"):
            backend += f" — {a['why']}"
        w(f"| {NAMES[n]} | {backend} | {fmt(rows) if rows is not None else '–'} | {sent:,} / "
          f"{received:,} | {f'{rows / received:.2f}' if rows is not None and received else '–'} |")
    w("")
    if arch:
        w("Each message with a body belongs in two archives (the sender's and the recipient's): "
          "about 2 rows per message delivered when archiving is on (more where messages were "
          "archived but not delivered in time, fewer if a server was stopped with messages still "
          "queued), 0 when it is off.")
        w("")


def paired_rows(k, fl):
    """Per offered rate of the paired scenario: kabard's and the floor's msgs/CPU-s per round,
    the median of the per-round ratios (round i of kabard against round i of the floor, measured
    a minute apart), p99s and the CPU steal in the windows."""
    rows = []
    for rate in sorted(set(k.paired) & set(fl.paired)):
        ks, fs = k.paired[rate], fl.paired[rate]
        kc = [k.per_cpu(x) for x in ks]
        fc = [fl.per_cpu(x) for x in fs]
        ratios = [a / b for a, b in zip(kc, fc) if a and b]
        if not ratios:
            continue
        rows.append({
            "rate": rate, "k": kc, "f": fc, "ratios": ratios,
            "ratio": statistics.median(ratios),
            "kp99": statistics.median(x["p99_ms"] for x in ks),
            "fp99": statistics.median(x["p99_ms"] for x in fs),
            "kp99s": [x["p99_ms"] for x in ks],
            "ksteals": [x.get("server_cpu_steal_s", 0) for x in ks],
            "fp99s": [x["p99_ms"] for x in fs],
            "fsteals": [x.get("server_cpu_steal_s", 0) for x in fs],
            "steal": max([x.get("server_cpu_steal_s", 0) for x in ks + fs] or [0]),
        })
    return rows


def main():
    meta, recs = load(sys.argv[1])
    out_path = sys.argv[2]
    S = {n: Server(n, recs) for n in SERVERS}
    present = [n for n in SERVERS if S[n].all]
    k, fl, pr, ej = S["kabard"], S["floor"], S["prosody"], S["ejabberd"]
    L = []
    w = L.append
    w(f"# Benchmark results, {meta.get('date', '?')}")
    w("")
    w(f"Machine: {meta.get('cpu', '?')}, {meta.get('cpus', '?')} CPUs, "
      f"{meta.get('mem_gib', '?')} GiB, Linux {meta.get('kernel', '?')}; kabar commit "
      f"`{meta.get('commit', '?')}`; Prosody {meta.get('prosody') or '?'}, ejabberd "
      f"{meta.get('ejabberd') or '?'} (Debian 12 packages).")
    w("")
    end = next((r for r in recs if r.get("meta_end")), {})
    if meta.get("load_start") or end.get("load_end"):
        w(f"Load average (1, 5, 15 min) at the start: {meta.get('load_start', '?')}; at the end: "
          f"{end.get('load_end', '?')}.")
        w("")
    w("Method (`make bench`, i.e. `bench/run`): each server runs alone on CPU 0 (`taskset`), "
      "kabar-bench on CPU 1; all on loopback, plain TCP unless marked TLS (STARTTLS). "
      "CPU time, RSS and context switches are read from `/proc/PID` at the start and end of each "
      "measured window only. Throughput: 1,000 online users with 10-contact rosters (made "
      "beforehand: through subscriptions on kabard; written into Prosody's and ejabberd's "
      "storage in the state those subscriptions leave, since they pay for each subscription "
      "change in proportion to the roster), chat messages to roster contacts, the send time in the "
      "body; the offered rate rises (2 s warm-up + 8 s measured per step) until p99 passes 100 ms, "
      "errors appear or deliveries fall behind. Messages per CPU-second = messages delivered in "
      "the window / server CPU seconds in the window. The floor (`bench/floor`) is the leanest "
      "relay kabar-bench can drive (one thread, epoll, expat, forwards the original bytes, SASL "
      "PLAIN only, no rosters or presence), measured under the same load and pinning.")
    w("")
    archive_section(w, meta, recs, present)
    w("## Side by side")
    w("")
    w("| | " + " | ".join(NAMES[n] for n in present) + " |")
    w("|---|" + "---|" * len(present))

    def row(label, fn, digits=0, mark=None):
        w(f"| {label} | " + " | ".join(fmt(fn(S[n]), digits) + (mark(S[n]) if mark else "")
                                       for n in present) + " |")

    def unsustained(rate):
        """' (not sustained)' after a server's figure at `rate` when that step failed."""
        def mark(s):
            st = s.at_rate(rate)
            return " (not sustained)" if st and not st.get("pass") else ""
        return mark

    row("max sustained delivered msg/s", lambda s: s.best() and s.best()["delivered_per_s"])
    row("msgs per server CPU-second at that max", lambda s: s.per_cpu(s.best()))
    row("msgs per server CPU-second at 4,000 msg/s offered",
        lambda s: s.per_cpu(s.at_rate(4000)), mark=unsustained(4000))
    row("p99 latency at 4,000 msg/s (ms)", lambda s: s.at_rate(4000) and
        s.at_rate(4000)["p99_ms"], 2, mark=unsustained(4000))
    row("p99 latency at the max (ms)", lambda s: s.best() and s.best()["p99_ms"], 2)
    row("syscalls per message at 4,000 msg/s (perf)", lambda s: s.perf_per_msg("perf_syscalls"), 2)
    row("context switches per message at 4,000 msg/s", lambda s: s.perf_per_msg(
        "perf_ctx_switches"), 3)
    row("RSS per idle authenticated connection, plain (bytes)", lambda s: s.mem("none"))
    row("RSS per idle authenticated connection, TLS (bytes)", lambda s: s.mem("starttls"))
    row("SCRAM logins per second", lambda s: s.logins and s.logins["logins_per_s"])
    row("SCRAM logins per server CPU-second", lambda s: s.logins and s.logins["logins_per_cpu_s"])
    row("presence stanzas delivered per second (100-contact rosters)",
        lambda s: s.presence and s.presence.get("presence_per_s"))
    row("presence stanzas per server CPU-second",
        lambda s: s.presence and s.presence.get("presence_per_cpu_s"))
    tsung_rates = sorted({r["offered"] for n in present for r in S[n].tsung_steps})
    for rate in tsung_rates:
        row(f"tsung: delivered msg/s at {rate:,.0f} offered", lambda s, r=rate: s.tsung_at(r) and
            s.tsung_at(r)["delivered_per_s"])
        row(f"tsung: msgs per server CPU-second at {rate:,.0f} offered",
            lambda s, r=rate: s.tsung_per_cpu(r))
    w("")
    w("The floor offers only SASL PLAIN, so its login figures are PLAIN logins; it has no rosters "
      "or presence and is not run in the presence scenario.")
    w("")

    sm_present = [n for n in present if S[n].sm_steps]
    if sm_present:
        w("## Stream management (the sm scenario)")
        w("")
        w("The throughput ladder again with XEP-0198 enabled on every connection and an ack "
          "requested after every 5 messages sent (what Conversations does). kabard acknowledges a "
          "message only once it is durable (committed to its message log, in group commits); "
          "Prosody (mod_smacks) and ejabberd (mod_stream_mgmt) acknowledge what they have "
          "handled in memory. The floor has no stream management: its figures are its plain "
          "ladder, run again in this scenario as the reference.")
        w("")
        w("| | " + " | ".join(NAMES[n] for n in sm_present) + " |")
        w("|---|" + "---|" * len(sm_present))

        def smrow(label, fn, digits=0):
            w(f"| {label} | " + " | ".join(fmt(fn(S[n]), digits) for n in sm_present) + " |")

        smrow("max sustained delivered msg/s", lambda s: s.sm_best() and
              s.sm_best()["delivered_per_s"])
        smrow("msgs per server CPU-second at that max", lambda s: s.per_cpu(s.sm_best()))
        for rate in sorted({r["offered"] for n in sm_present for r in S[n].sm_steps}):
            smrow(f"msgs per server CPU-second at {rate:,.0f} msg/s offered",
                  lambda s, r=rate: s.per_cpu(s.sm_at(r)))
            smrow(f"p99 latency at {rate:,.0f} msg/s (ms)",
                  lambda s, r=rate: s.sm_at(r) and s.sm_at(r)["p99_ms"], 2)
        smrow("msgs per server CPU-second at 4,000 msg/s without stream management",
              lambda s: s.per_cpu(s.at_rate(4000)))
        if "kabard" in sm_present:
            for n in sm_present:
                if n == "kabard":
                    continue
                for rate in sorted({r["offered"] for r in k.sm_steps}):
                    w(f"- kabard / {NAMES[n]} at {rate:,.0f} msg/s, msgs per CPU-second: "
                      f"{ratio(k.per_cpu(k.sm_at(rate)), S[n].per_cpu(S[n].sm_at(rate)))}")
        w("")

    w("## kabard's ratios")
    w("")
    others = [n for n in ("floor", "prosody", "ejabberd") if n in present]
    w("| | " + " | ".join(f"kabard / {NAMES[n]}" for n in others) + " |")
    w("|---|" + "---|" * len(others))

    def rrow(label, fn, inverse=False):
        w(f"| {label} | " + " | ".join(ratio(fn(k), fn(S[n]), inverse) for n in others) + " |")

    rrow("max sustained msg/s", lambda s: s.best() and s.best()["delivered_per_s"])
    rrow("msgs per CPU-second at each one's max", lambda s: s.per_cpu(s.best()))
    rrow("msgs per CPU-second at 4,000 msg/s", lambda s: s.per_cpu(s.at_rate(4000)))
    rrow("memory per idle connection, plain (lower is better: other / kabard)",
         lambda s: s.mem("none"), inverse=True)
    rrow("memory per idle connection, TLS (other / kabard)", lambda s: s.mem("starttls"),
         inverse=True)
    rrow("logins per CPU-second", lambda s: s.logins and s.logins["logins_per_cpu_s"])
    rrow("presence per CPU-second", lambda s: s.presence and s.presence.get("presence_per_cpu_s"))
    for rate in tsung_rates:
        rrow(f"tsung: msgs per CPU-second at {rate:,.0f} msg/s", lambda s, r=rate:
             s.tsung_per_cpu(r))
    w("")

    # Targets from issue #7; with every message archived, issue 17's (60% of the floor; the same
    # 5x Prosody and 2x ejabberd at 4,000 msg/s, the peers archiving too).
    archiving = meta.get("archive") == "on"
    goal = 0.6 if archiving else 0.7
    w("## Targets (issue 17, every message archived; the rest issue #7's)" if archiving else
      "## Targets (issue #7)")
    w("")
    w("| target | measured | met? |")
    w("|---|---|---|")

    def target(label, value, goal, ok, note=""):
        w(f"| {label} | {value} | {'yes' if ok else 'NO'}{(' — ' + note) if note else ''} |")

    common = sorted({s["offered"] for s in k.steps} & {s["offered"] for s in fl.steps})
    fracs = []
    for rate in common:
        a, b = k.per_cpu(k.at_rate(rate)), fl.per_cpu(fl.at_rate(rate))
        if a and b:
            fracs.append((rate, a / b))
    if fracs:
        worst = min(fracs, key=lambda x: x[1])
        target(f"kabard msgs/CPU-s >= {goal * 100:.0f}% of the floor's at every offered rate "
               "(ladders, run minutes apart)",
               f"worst {worst[1] * 100:.0f}% at {worst[0]:,.0f} msg/s",
               goal, worst[1] >= goal,
               "" if worst[1] >= goal else f"short by {(goal - worst[1]) * 100:.0f} points")
    prs = paired_rows(k, fl)
    if prs:
        worst = min(prs, key=lambda x: x["ratio"])
        target("the same, paired (both up, measured in turn; median of the rounds' ratios)",
               f"worst {worst['ratio'] * 100:.0f}% at {worst['rate']:,.0f} msg/s",
               goal, worst["ratio"] >= goal,
               "" if worst["ratio"] >= goal else
               f"short by {(goal - worst['ratio']) * 100:.0f} points")
    for other, goal4k, goalmax in (("prosody", 5, 10), ("ejabberd", 2, 4)):
        o = S[other]
        a, b = k.per_cpu(k.at_rate(4000)), o.per_cpu(o.at_rate(4000))
        if a and not b and o.steps:
            last = max(o.steps, key=lambda st: st["offered"])
            target(f"at 4,000 msg/s, msgs/CPU-s >= {goal4k}x {NAMES[other]}",
                   f"not measured: {NAMES[other]}'s ladder stopped at {last['offered']:,.0f} "
                   "msg/s", goal4k, False, "no figure to compare")
        if a and b:
            r = a / b
            note = "" if r >= goal4k else f"{r / goal4k * 100:.0f}% of goal"
            if not o.at_rate(4000).get("pass"):
                note = (note + "; " if note else "") + (
                    f"{NAMES[other]} did not sustain 4,000 msg/s: its figure there is its "
                    "saturated throughput per CPU-second")
            target(f"at 4,000 msg/s, msgs/CPU-s >= {goal4k}x {NAMES[other]}", f"{r:.2f}x",
                   goal4k, r >= goal4k, note)
        a, b = k.per_cpu(k.best()), o.per_cpu(o.best())
        if a and b:
            r = a / b
            target(f"at each server's max, msgs/CPU-s >= {goalmax}x {NAMES[other]}"
                   f"{' (issue #7)' if archiving else ''}", f"{r:.2f}x",
                   goalmax, r >= goalmax, "" if r >= goalmax else f"{r / goalmax * 100:.0f}% of goal")
    m = k.mem("none")
    if m:
        target("memory per idle authenticated connection <= 4 KiB plain", f"{m / 1024:.1f} KiB",
               4096, m <= 4096, "" if m <= 4096 else f"{m / 4096:.1f}x the budget")
    m = k.mem("starttls")
    if m:
        target("memory per idle authenticated connection <= 12 KiB TLS", f"{m / 1024:.1f} KiB",
               12288, m <= 12288, "" if m <= 12288 else f"{m / 12288:.1f}x the budget")
    b = k.best()
    if b:
        half = k.near(b["delivered_per_s"] / 2)
        if half:
            target("p99 at half of kabard's max <= 5 ms",
                   f"{half['p99_ms']:.2f} ms at {half['offered']:,.0f} msg/s (nearest step to "
                   f"{b['delivered_per_s'] / 2:,.0f})", 5, half["p99_ms"] <= 5,
                   "" if half["p99_ms"] <= 5 else f"{half['p99_ms'] / 5:.1f}x the budget")
        if prs:
            ph = min(prs, key=lambda x: abs(x["rate"] - b["delivered_per_s"] / 2))
            target("the same, paired (median of the rounds)",
                   f"{ph['kp99']:.2f} ms at {ph['rate']:,.0f} msg/s (rounds: "
                   f"{', '.join(f'{v:.2f}' for v in ph['kp99s'])})", 5, ph["kp99"] <= 5,
                   "" if ph["kp99"] <= 5 else f"{ph['kp99'] / 5:.1f}x the budget")
            # Steal (the hypervisor running someone else on CPU 0) stalls every connection at
            # once: a tail the server cannot cause or cure. Its least-stolen round shows what
            # the server does when it has the CPU; the median above stays the headline.
            qi = min(range(len(ph["ksteals"])), key=lambda i: ph["ksteals"][i])
            fi = min(range(len(ph["fsteals"])), key=lambda i: ph["fsteals"][i])
            q = ph["kp99s"][qi]
            target("the same, paired, kabard's least-stolen round",
                   f"{q:.2f} ms at {ph['rate']:,.0f} msg/s (steal {ph['ksteals'][qi]:.2f} s of "
                   f"the 8 s window; the floor's least-stolen: {ph['fp99s'][fi]:.2f} ms, steal "
                   f"{ph['fsteals'][fi]:.2f} s)", 5, q <= 5,
                   "" if q <= 5 else f"{q / 5:.1f}x the budget")
    w("")

    if fracs:
        w("## kabard against the floor, per offered rate")
        w("")
        w("| offered msg/s | kabard msgs/CPU-s | floor msgs/CPU-s | kabard / floor | kabard ctx "
          "switches/msg | floor ctx switches/msg |")
        w("|---|---|---|---|---|---|")
        for rate, fr in fracs:
            ks, fs = k.at_rate(rate), fl.at_rate(rate)
            w(f"| {rate:,.0f} | {fmt(k.per_cpu(ks))} | {fmt(fl.per_cpu(fs))} | {fr * 100:.0f}% | "
              f"{fmt(k.ctx_per_msg(ks), 3)} | {fmt(fl.ctx_per_msg(fs), 3)} |")
        w("")

    if prs:
        rounds = max(len(r["ratios"]) for r in prs)
        w(f"## kabard against the floor, paired ({rounds} rounds)")
        w("")
        w("Both up at once, both on CPU 0, driven in turn through the same steps (2 s warm-up + "
          "8 s measured each), round after round, so each kabard window has a floor window about "
          "a minute away. Ratio: the median of the rounds' kabard/floor ratios. Steal: the most "
          "time the hypervisor gave CPU 0 to someone else in any of these windows "
          "(`/proc/stat`).")
        w("")
        w("| offered msg/s | kabard msgs/CPU-s per round | floor msgs/CPU-s per round | kabard / "
          "floor (median) | per round | kabard p99 ms (median) | floor p99 ms (median) | "
          "max steal s | kabard p99 ms (steal s) per round | floor p99 ms (steal s) per round |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for r in prs:
            w(f"| {r['rate']:,.0f} | {', '.join(fmt(v) for v in r['k'])} | "
              f"{', '.join(fmt(v) for v in r['f'])} | {r['ratio'] * 100:.0f}% | "
              f"{', '.join(f'{v * 100:.0f}%' for v in r['ratios'])} | {r['kp99']:.2f} | "
              f"{r['fp99']:.2f} | {r['steal']:.2f} | "
              f"{', '.join(f'{p:.2f} ({s:.2f})' for p, s in zip(r['kp99s'], r['ksteals']))} | "
              f"{', '.join(f'{p:.2f} ({s:.2f})' for p, s in zip(r['fp99s'], r['fsteals']))} |")
        w("")

    w("## Throughput ladders")
    for n in present:
        s = S[n]
        if not s.steps:
            continue
        w("")
        w(f"### {NAMES[n]}")
        w("")
        w("| offered | delivered/s | p50 ms | p99 ms | p99.9 ms | server CPU s | msgs/CPU-s | "
          "ctx sw/msg | RSS MiB | errors | pass |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for st in s.steps:
            w(f"| {st['offered']:,.0f} | {st['delivered_per_s']:,.0f} | {st['p50_ms']:.2f} | "
              f"{st['p99_ms']:.2f} | {st['p999_ms']:.2f} | {st['server_cpu_s']:.2f} | "
              f"{fmt(s.per_cpu(st))} | {fmt(s.ctx_per_msg(st), 3)} | "
              f"{st['server_rss_kib'] / 1024:.0f} | {st['step_errors']} | "
              f"{'yes' if st['pass'] else 'no'} |")
        if s.ladder:
            w("")
            w(f"Login of the 1,000 users: {s.ladder['login_s']:.1f} s; messages sent "
              f"{s.ladder['sent']:,}, received {s.ladder['received']:,}, lost {s.ladder['lost']:,}.")
    w("")
    w("## Where the time goes at 4,000 msg/s (perf stat on the server, 5 s window)")
    w("")
    w("| | syscalls | context switches | delivered | syscalls/msg | ctx switches/msg | CPU s |")
    w("|---|---|---|---|---|---|---|")
    for n in present:
        p = S[n].perf
        if not p:
            continue
        w(f"| {NAMES[n]} | {fmt(p['perf_syscalls'])} | {fmt(p['perf_ctx_switches'])} | "
          f"{p['delivered']:,} | {fmt(S[n].perf_per_msg('perf_syscalls'), 2)} | "
          f"{fmt(S[n].perf_per_msg('perf_ctx_switches'), 3)} | {p['server_cpu_s']:.2f} |")
    w("")
    w("## Memory")
    w("")
    w("| | TLS | connections | RSS before MiB | RSS after MiB | bytes/connection | login s |")
    w("|---|---|---|---|---|---|---|")
    for n in present:
        for tls, r in S[n].memory.items():
            w(f"| {NAMES[n]} | {tls} | {r['connections']:,}/{r['target']:,} | "
              f"{r['rss_before_kib'] / 1024:.0f} | {r['rss_after_kib'] / 1024:.0f} | "
              f"{fmt(r['bytes_per_conn'])} | {r['login_s']:.1f} |")
    w("")
    w("15,000 connections = 1,000 accounts x 15 resources, each authenticated (SCRAM) and bound, "
      "no initial presence; RSS is sampled in a freshly started server before the first "
      "connection and after all are open and 5 s idle.")
    w("")
    tsung_section(w, S, present, tsung_rates)
    timings = [r for r in recs if r.get("scenario") == "timing"]
    if timings:
        w("## Run time")
        w("")
        w("| server | phase | seconds |")
        w("|---|---|---|")
        for r in timings:
            if r.get("phase") != "total":
                w(f"| {NAMES.get(r['server'], r['server'])} | {r['phase']} | "
                  f"{r['seconds']:,.1f} |")
        totals = [r for r in timings if r.get("phase") == "total"]
        for r in totals:
            w(f"| {NAMES.get(r['server'], r['server'])} | **all of it** | "
              f"**{r['seconds']:,.1f}** |")
        if totals:
            w(f"| | **the whole run** | **{sum(r['seconds'] for r in totals):,.1f}** "
              f"({sum(r['seconds'] for r in totals) / 60:.1f} min) |")
        w("")
    w("## Errors")
    w("")
    any_err = False
    for r in recs:
        if r.get("errors"):
            any_err = True
            kinds = "; ".join(f"{k2} x{v}" for k2, v in r.get("error_kinds", {}).items())
            w(f"- {NAMES.get(r.get('server'), r.get('server'))} / {r.get('scenario')}"
              f"{' step ' + str(r['step']) if 'step' in r else ''}: {r['errors']} — {kinds[:400]}")
        if r.get("failed"):
            any_err = True
            if r.get("scenario") == "start":
                w(f"- {r.get('server')}: did not start")
            else:
                w(f"- {NAMES.get(r.get('server'), r.get('server'))} / {r.get('scenario')}: "
                  f"failed ({r.get('why', '?')})")
    if not any_err:
        w("None.")
    w("")
    if not tsung_rates:
        w("Not measured in this run: the tsung-driven throughput scenario (`SCENARIOS=... tsung`).")
    with open(out_path, "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
