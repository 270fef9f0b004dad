"""Turns one tsung run (kabar_tsung.erl's counts and tsung's own tsung.log) into JSON lines for
bench/run's results: one per measured step, and a summary.

usage: summarize.py SERVER KABAR_TSUNG_OUT TSUNG_LOG CLK_TCK [TSUNG_STDOUT]
"""
import json
import math
import sys
from collections import defaultdict


def load_counts(path):
    rows = defaultdict(dict)
    scalars = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            if not p:
                continue
            k = p[0]
            if k in ("sent", "dlv"):
                rows[k][int(p[1])] = int(p[2])
            elif k == "lat":
                rows["lat"].setdefault(int(p[1]), {})[int(p[2])] = int(p[3])
            elif k == "proc":
                rows["proc"][(int(p[1]), int(p[2]))] = [int(x) for x in p[3:]]
            elif k == "cfg_rates":
                scalars[k] = [int(x) for x in p[1:]]
            else:
                scalars[k] = int(p[1])
    return rows, scalars


def percentile_ms(hist, q):
    """Upper edge of the histogram bucket holding quantile q (16 buckets per power of 2 of µs)."""
    total = sum(hist.values())
    if not total:
        return None
    want = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= want:
            return round(2 ** ((b + 1) / 16) / 1000, 3)
    return None


def load_tsung_log(path):
    """tsung's stats dumps: [(epoch second, {name: [fields...]})]."""
    dumps = []
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("# stats: dump at "):
                    dumps.append((int(line.split()[-1]), {}))
                elif line.startswith("stats: ") and dumps:
                    p = line.split()
                    dumps[-1][1][p[1]] = [float(x) for x in p[2:]]
    except OSError:
        pass
    return dumps


def main():
    server, out_path, log_path, clk_tck = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    try:
        rows, sc = load_counts(out_path)
    except OSError:
        print(json.dumps({"server": server, "scenario": "tsung", "summary": True, "failed": True,
                          "why": "no counts from kabar_tsung (tsung did not start or log in)"}))
        return 1
    dumps = load_tsung_log(log_path)
    rates = sc.get("cfg_rates", [])
    warm, meas = sc.get("cfg_warmup_ms", 0), sc.get("cfg_measure_ms", 0)
    step_ms = warm + meas
    start = sc.get("start_ms")
    rc = 0
    for k, rate in enumerate(rates):
        p0, p1 = rows["proc"].get((k, 0)), rows["proc"].get((k, 1))
        rec = {"server": server, "scenario": "tsung", "step": k, "offered": rate}
        if start is None or not p0 or not p1:
            rec.update({"failed": True, "why": "step not reached"})
            print(json.dumps(rec))
            rc = 1
            continue
        secs = (p1[3] - p0[3]) / 1000
        cpu = (p1[0] - p0[0]) / clk_tck
        sent, dlv = rows["sent"].get(k, 0), rows["dlv"].get(k, 0)
        hist = rows["lat"].get(k, {})
        # tsung's own latency samples (one per read holding a stamp), from the 1 s dumps whose
        # second lies inside this window; its max column is the maximum since the start.
        w0, w1 = (start + k * step_ms + warm) / 1000, (start + (k + 1) * step_ms) / 1000
        n = tot = 0.0
        tmax = None
        for t, stats in dumps:
            s = stats.get("xmpp_msg_latency")
            if s and w0 <= t - 0.5 < w1:
                n += s[0]
                tot += s[0] * s[1]
                tmax = s[3]
        # Poisson arrivals: the count sent in a window is within a few % of rate x seconds;
        # below 95% the load generator (tsung on its one CPU) fell behind.
        tool_limited = sent < 0.95 * rate * secs
        sustained = dlv + sent / 1000 >= sent and not tool_limited
        p99 = percentile_ms(hist, 0.99)
        rec.update({
            "measure_s": round(secs, 3), "sent": sent, "delivered": dlv,
            "sent_per_s": round(sent / secs, 1), "delivered_per_s": round(dlv / secs, 1),
            "server_cpu_s": round(cpu, 3),
            "msgs_per_cpu_s": round(dlv / cpu) if cpu > 0 else None,
            "server_rss_kib": p1[1], "server_ctx_switches": p1[2] - p0[2],
            "p50_ms": percentile_ms(hist, 0.5), "p99_ms": p99,
            "p999_ms": percentile_ms(hist, 0.999),
            "tsung_samples": int(n), "tsung_mean_ms": round(tot / n, 3) if n else None,
            "tsung_max_ms_so_far": tmax,
            "tool_limited": tool_limited,
            "pass": bool(sustained and p99 is not None and p99 <= 100),
        })
        print(json.dumps(rec))
    last = dumps[-1][1] if dumps else {}
    tsung_errors = {name: int(v[-1]) for name, v in last.items()
                    if name.startswith("error") or name in ("timeout",)}

    def mean(name):
        v = last.get(name)
        return round(v[5], 2) if v and len(v) >= 7 else None

    summary = {
        "server": server, "scenario": "tsung", "summary": True,
        "users": sc.get("cfg_users"), "online": sc.get("online_at_start"),
        "login_s": round(sc["login_ms"] / 1000, 2) if "login_ms" in sc else None,
        "tsung_login_mean_ms": mean("tr_login"), "tsung_roster_mean_ms": mean("tr_roster"),
        "sent_total": sc.get("sent_total", 0), "delivered_total": sc.get("dlv_total", 0),
        "reads": sc.get("reads", 0), "reads_with_stamps": sc.get("reads_with_stamps", 0),
        "tsung_latency_samples_total": int(last["xmpp_msg_latency"][-1])
        if "xmpp_msg_latency" in last else 0,
        "message_errors": sc.get("errors", 0), "tsung_errors": tsung_errors,
        "plugin_patched": bool(sc.get("plugin_patched")),
        "warmup_s": warm / 1000, "measure_s": meas / 1000,
    }
    summary["errors"] = summary["message_errors"] + sum(tsung_errors.values())
    print(json.dumps(summary))
    if not summary["plugin_patched"]:
        print("summarize: tsung ran the unpatched plugin; deliveries were not counted",
              file=sys.stderr)
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
