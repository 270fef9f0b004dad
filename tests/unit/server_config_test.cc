#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "server/config.h"

namespace kabar::server {
namespace {

std::filesystem::path write_temp(const std::string& text) {
  auto dir = std::filesystem::temp_directory_path() / ("kabar-cfg-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  static int n = 0;
  auto path = dir / ("c" + std::to_string(++n) + ".toml");
  std::ofstream(path) << text;
  return path;
}

TEST(Endpoint, ParsesHostAndPort) {
  auto ep = parse_endpoint("127.0.0.1:5222");
  EXPECT_EQ(ep.host, "127.0.0.1");
  EXPECT_EQ(ep.port, 5222);
  auto v6 = parse_endpoint("[::1]:5223");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port, 5223);
}

TEST(Endpoint, RejectsBadInput) {
  EXPECT_THROW(parse_endpoint("localhost"), std::invalid_argument);
  EXPECT_THROW(parse_endpoint("localhost:"), std::invalid_argument);
  EXPECT_THROW(parse_endpoint(":5222"), std::invalid_argument);
  EXPECT_THROW(parse_endpoint("host:70000"), std::invalid_argument);
  EXPECT_THROW(parse_endpoint("host:52x2"), std::invalid_argument);
}

TEST(ConfigFile, ReadsEveryKey) {
  auto path = write_temp(R"(
domain = "example.org"
data_dir = "/tmp/x"
allow_registration = true
allow_plaintext = true
log_level = "debug"
threads = 3
[listen]
c2s = ["127.0.0.1:1", "127.0.0.2:2"]
c2s_tls = "127.0.0.1:3"
proxy65 = "127.0.0.1:4"
http = "127.0.0.1:5"
[http]
base_url = "https://files.example.org/"
[upload]
max_file_size = 1000
quota = 2000
expire_after = 30
[extdisco]
services = ["stun:127.0.0.1:3478", "turns:[::1]:5349"]
turn_secret = "s"
credential_ttl = 60
[proxy65]
host = "files.example.org"
streams_per_account = 3
bytes_per_second = 1000000
idle_timeout = 9
[tls]
cert = "/c.pem"
key = "/k.pem"
[limits]
max_stanza_bytes = 1000
offline_messages = 3
offline_bytes = 7000
offline_per_sender = 2
auth_timeout = 2
idle_timeout = 4
ping_timeout = 5
auth_failures_per_account = 6
auth_failures_per_address = 7
auth_failure_delay_ms = 11
auth_failure_max_delay_ms = 12
auth_failures_slow_account = 13
preauth_stanza_bytes = 9000
unauthenticated_connections = 14
unauthenticated_per_address = 15
registrations_per_address = 16
scram_iterations = 5000

[sm]
resume_timeout = 17
max_unacked = 18

[csi]
enabled = false
max_held = 19

[push]
include_body = true
include_sender = false
min_interval = 20
)");
  Config cfg;
  load_config_file(path, cfg);
  EXPECT_EQ(cfg.domain, "example.org");
  EXPECT_EQ(cfg.data_dir, "/tmp/x");
  EXPECT_TRUE(cfg.allow_registration);
  EXPECT_TRUE(cfg.allow_plaintext);
  EXPECT_EQ(cfg.log_level, "debug");
  EXPECT_EQ(cfg.threads, 3);
  ASSERT_EQ(cfg.c2s.size(), 2u);
  EXPECT_EQ(cfg.c2s[1].host, "127.0.0.2");
  ASSERT_EQ(cfg.c2s_tls.size(), 1u);
  EXPECT_EQ(cfg.c2s_tls[0].port, 3);
  ASSERT_EQ(cfg.http.size(), 1u);
  EXPECT_EQ(cfg.http[0].port, 5);
  EXPECT_EQ(cfg.http_base_url, "https://files.example.org/");
  EXPECT_EQ(cfg.upload_max_file_size, 1000u);
  EXPECT_EQ(cfg.upload_quota, 2000u);
  EXPECT_EQ(cfg.upload_expire_after_s, 30);
  ASSERT_EQ(cfg.proxy65.size(), 1u);
  EXPECT_EQ(cfg.proxy65[0].port, 4);
  EXPECT_EQ(cfg.proxy65_host, "files.example.org");
  EXPECT_EQ(cfg.proxy65_streams_per_account, 3);
  EXPECT_EQ(cfg.proxy65_bytes_per_second, 1000000);
  EXPECT_EQ(cfg.proxy65_idle_timeout_s, 9);
  ASSERT_EQ(cfg.external_services.size(), 2u);
  EXPECT_EQ(cfg.external_services[0].type, "stun");
  EXPECT_EQ(cfg.external_services[0].transport, "udp");
  EXPECT_EQ(cfg.external_services[1].type, "turns");
  EXPECT_EQ(cfg.external_services[1].host, "::1");
  EXPECT_EQ(cfg.external_services[1].port, 5349);
  EXPECT_EQ(cfg.external_services[1].transport, "tcp");
  EXPECT_EQ(cfg.turn_secret, "s");
  EXPECT_EQ(cfg.turn_credential_ttl_s, 60);
  EXPECT_EQ(cfg.tls_cert, "/c.pem");
  EXPECT_EQ(cfg.tls_key, "/k.pem");
  EXPECT_EQ(cfg.max_stanza_bytes, 1000u);
  EXPECT_EQ(cfg.offline_limit, 3u);
  EXPECT_EQ(cfg.offline_limit_bytes, 7000u);
  EXPECT_EQ(cfg.offline_limit_per_sender, 2u);
  EXPECT_EQ(cfg.auth_timeout_s, 2);
  EXPECT_EQ(cfg.idle_timeout_s, 4);
  EXPECT_EQ(cfg.ping_timeout_s, 5);
  EXPECT_EQ(cfg.auth_failures_per_account, 6);
  EXPECT_EQ(cfg.auth_failures_per_address, 7);
  EXPECT_EQ(cfg.auth_failure_delay_ms, 11);
  EXPECT_EQ(cfg.auth_failure_max_delay_ms, 12);
  EXPECT_EQ(cfg.auth_failures_slow_account, 13);
  EXPECT_EQ(cfg.preauth_stanza_bytes, 9000u);
  EXPECT_EQ(cfg.unauthenticated_connections, 14);
  EXPECT_EQ(cfg.unauthenticated_per_address, 15);
  EXPECT_EQ(cfg.registrations_per_address, 16);
  EXPECT_EQ(cfg.scram_iterations, 5000);
  EXPECT_EQ(cfg.sm_resume_timeout_s, 17);
  EXPECT_EQ(cfg.sm_max_unacked, 18u);
  EXPECT_FALSE(cfg.csi_enabled);
  EXPECT_EQ(cfg.csi_max_held, 19u);
  EXPECT_TRUE(cfg.push_include_body);
  EXPECT_FALSE(cfg.push_include_sender);
  EXPECT_EQ(cfg.push_min_interval_s, 20);
}

TEST(ConfigFile, ExternalServiceUris) {
  auto svc = parse_external_service("turn:turn.example.org:3478?transport=tcp");
  EXPECT_EQ(svc.type, "turn");
  EXPECT_EQ(svc.host, "turn.example.org");
  EXPECT_EQ(svc.port, 3478);
  EXPECT_EQ(svc.transport, "tcp");
  EXPECT_THROW(parse_external_service("ftp:h:21"), std::invalid_argument);
  EXPECT_THROW(parse_external_service("stun:h"), std::invalid_argument);
  EXPECT_THROW(parse_external_service("stun:h:1?transport=sctp"), std::invalid_argument);
}

TEST(ConfigFile, ContactAddresses) {
  Config cfg;
  load_config_file(write_temp(R"(
[contact]
support = "https://example.org/help"
abuse = ["mailto:abuse@example.org", "xmpp:abuse@example.org"]
)"),
                   cfg);
  // XEP-0157's order of kinds, whatever the file's.
  ASSERT_EQ(cfg.contact_addresses.size(), 2u);
  EXPECT_EQ(cfg.contact_addresses[0].first, "abuse");
  EXPECT_EQ(cfg.contact_addresses[0].second,
            (std::vector<std::string>{"mailto:abuse@example.org", "xmpp:abuse@example.org"}));
  EXPECT_EQ(cfg.contact_addresses[1].first, "support");
  Config bad;
  EXPECT_THROW(load_config_file(write_temp("[contact]\nboss = \"mailto:b@example.org\"\n"), bad),
               std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("[contact]\nabuse = \"not a uri\"\n"), bad),
               std::runtime_error);
}

TEST(ConfigFile, RejectsUnknownKeysAndBadValues) {
  Config cfg;
  EXPECT_THROW(load_config_file(write_temp("domian = \"x\"\n"), cfg), std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("[limits]\nfoo = 1\n"), cfg), std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("threads = 0\n"), cfg), std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("[limits]\nauth_timeout = -1\n"), cfg),
               std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("[limits]\nscram_iterations = 100\n"), cfg),
               std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("allow_plaintext = \"yes\"\n"), cfg),
               std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("[listen]\nc2s = \"nohost\"\n"), cfg),
               std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("domain = \n"), cfg), std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("[push]\nmin_interval = -1\n"), cfg),
               std::runtime_error);
  EXPECT_THROW(load_config_file(write_temp("[push]\ninclude_body = \"no\"\n"), cfg),
               std::runtime_error);
}

}  // namespace
}  // namespace kabar::server
