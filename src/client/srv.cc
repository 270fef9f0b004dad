// DNS SRV lookup for _xmpp-client._tcp (RFC 6120 §3.2.1) with the system resolver (libresolv).
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>

#include <algorithm>
#include <array>

#include "kabar/client.h"

namespace kabar::client {

std::vector<std::pair<std::string, std::uint16_t>> resolve_srv(const std::string& domain) {
  struct Record {
    std::uint16_t priority, weight, port;
    std::string target;
  };
  std::vector<Record> records;
  std::array<unsigned char, 4096> answer;
  std::string name = "_xmpp-client._tcp." + domain;
  int len = res_query(name.c_str(), ns_c_in, ns_t_srv, answer.data(), answer.size());
  std::vector<std::pair<std::string, std::uint16_t>> out;
  if (len <= 0) return out;
  ns_msg msg;
  if (ns_initparse(answer.data(), len, &msg) < 0) return out;
  for (int i = 0; i < ns_msg_count(msg, ns_s_an); ++i) {
    ns_rr rr;
    if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 || ns_rr_type(rr) != ns_t_srv) continue;
    const unsigned char* rd = ns_rr_rdata(rr);
    if (ns_rr_rdlen(rr) < 7) continue;
    Record r;
    r.priority = ns_get16(rd);
    r.weight = ns_get16(rd + 2);
    r.port = ns_get16(rd + 4);
    char host[NS_MAXDNAME];
    if (dn_expand(ns_msg_base(msg), ns_msg_end(msg), rd + 6, host, sizeof host) < 0) continue;
    r.target = host;
    // RFC 2782: a target of "." means the service is decidedly not available.
    if (r.target.empty() || r.target == ".") return {};
    records.push_back(std::move(r));
  }
  std::stable_sort(records.begin(), records.end(), [](const Record& a, const Record& b) {
    return a.priority != b.priority ? a.priority < b.priority : a.weight > b.weight;
  });
  for (auto& r : records) out.emplace_back(r.target, r.port);
  return out;
}

}  // namespace kabar::client
