"""Writes Prosody's roster files (internal storage) for bench accounts: the state that
kabar-bench's subscribe mode leaves behind once every subscription is approved — each user has
its ring neighbours (the same ring as kabar-bench's contact_of: +1, -1, +2, -2, ... up to
contacts/2 on each side) with subscription "both", no pending requests.

Why not through subscriptions: Prosody 0.12's internal storage reads, re-serializes and rewrites a
user's whole roster file on every roster change (rostermanager.save_roster -> map store
set_keys), and checks the account file first, so filling 100-contact rosters costs O(contacts)
per change: 200 users x 100 contacts did not finish in 5 minutes (about 11 approvals/s with
Prosody at 100% CPU). What is measured afterwards (logins loading these rosters, presence fan-out)
is unchanged.

usage: prosody-rosters.py DATA_DIR DOMAIN PREFIX USERS CONTACTS
The accounts must exist (in-band registration) and their users must be offline.
"""
import os
import sys


def contact_of(user, k, contacts, n):
    half = max(1, contacts // 2)
    idx = k % (2 * half)
    off = idx // 2 + 1
    if idx % 2:
        off = -off
    return ((user + off) % n + n) % n


def encode(s):
    # util.datamanager's encode: every non-alphanumeric character as %xx.
    return "".join(c if c.isascii() and c.isalnum() else "%%%02x" % ord(c) for c in s)


def main():
    data, domain, prefix, users, contacts = sys.argv[1:6]
    users, contacts = int(users), int(contacts)
    if contacts >= users:
        contacts = (users - 1) // 2 * 2
    d = os.path.join(data, encode(domain), "roster")
    os.makedirs(d, exist_ok=True)
    for u in range(users):
        items = sorted({contact_of(u, k, contacts, users) for k in range(contacts)})
        lines = ["return {", "\t[false] = {", "\t\t[\"version\"] = %d;" % len(items),
                 "\t\t[\"pending\"] = {};", "\t};"]
        for c in items:
            lines += ["\t[\"%s%d@%s\"] = {" % (prefix, c, domain),
                      "\t\t[\"subscription\"] = \"both\";", "\t\t[\"groups\"] = {};", "\t};"]
        lines.append("};")
        path = os.path.join(d, encode(prefix + str(u)) + ".dat")
        with open(path + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.rename(path + ".tmp", path)
    print(f"prosody-rosters: {users} rosters of {contacts} contacts in {d}", file=sys.stderr)


if __name__ == "__main__":
    main()
