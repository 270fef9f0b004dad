// kabard's configuration: one TOML file (--config), with command-line flags overriding it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kabar::server {

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
};
// Parses "HOST:PORT" or "[v6]:PORT"; throws std::invalid_argument with a readable message.
Endpoint parse_endpoint(const std::string& text);

// An external service announced by XEP-0215: "stun:HOST:PORT", "turn:HOST:PORT",
// "turns:HOST:PORT", optionally "?transport=udp|tcp" (RFC 7064/7065 URIs).
struct ExternalService {
  std::string type;  // stun, turn, turns
  std::string host;
  std::uint16_t port = 0;
  std::string transport;  // udp or tcp; empty: the type's default (turns: tcp, others: udp)
};
// Parses one such URI; throws std::invalid_argument with a readable message.
ExternalService parse_external_service(const std::string& uri);

struct Config {
  std::string domain = "localhost";
  std::filesystem::path data_dir = "data";
  std::vector<Endpoint> c2s;      // STARTTLS listeners (RFC 6120 §5)
  std::vector<Endpoint> c2s_tls;  // direct TLS listeners (XEP-0368)
  std::vector<Endpoint> proxy65;  // SOCKS5 bytestreams proxy (XEP-0065); empty: no proxy
  std::vector<Endpoint> http;     // HTTP listener (file upload, WebSocket, web client); empty: none
  // HTTPS listeners (the c2s certificate): WebSocket (wss://) and the web client; empty: none
  std::vector<Endpoint> https;
  bool allow_registration = false;
  bool allow_plaintext = false;
  std::filesystem::path tls_cert;  // PEM; empty: self-signed in data_dir, made on first start
  std::filesystem::path tls_key;
  std::string log_level = "info";
  // I/O shards (event loops, one thread each); 0: one per CPU this process may run on.
  int threads = 0;

  std::size_t max_stanza_bytes = 256 * 1024;
  // Before authentication (SASL, STARTTLS, a registration form fit easily; Prosody uses 10000).
  std::size_t preauth_stanza_bytes = 10'000;
  std::size_t offline_limit = 1000;
  // The offline queue's limits in bytes per account, and in messages from one sender (a bare
  // JID) per account; past any limit a message is bounced with <resource-constraint/>.
  std::size_t offline_limit_bytes = 32 * 1024 * 1024;
  std::size_t offline_limit_per_sender = 500;
  int auth_timeout_s = 30;  // a connection that has not authenticated by then is closed
  // After this much silence the server pings the client (XEP-0199; over WebSocket a ping frame,
  // RFC 6455 §5.5.2) and closes the connection if no answer comes in ping_timeout_s.
  int idle_timeout_s = 300;
  int ping_timeout_s = 30;
  // A client whose unwritten output is over the high watermark (its senders held back) and that
  // takes no byte for this long is closed; what it had queued is routed again.
  int write_stall_timeout_s = 60;
  // Failed logins (auth_throttle.h): per minute on one account from one address, then that
  // account is refused unchecked from that address (never from the others).
  int auth_failures_per_account = 5;
  int auth_failures_per_address = 30;  // per minute from one address, then refused unchecked
  int auth_failure_delay_ms = 250;     // an address's next attempt waits this, doubled per failure
  int auth_failure_max_delay_ms = 5000;
  int auth_failures_slow_account = 100;  // per minute from anywhere: the account's logins slow
  // Connections that have not authenticated: past the total the oldest is closed with
  // <resource-constraint/>; past the per-address count a new one gets <policy-violation/>.
  int unauthenticated_connections = 4096;
  int unauthenticated_per_address = 32;
  // Open HTTP and HTTPS connections from one address (before a WebSocket upgrade); past it a
  // new one is closed at once.
  int http_per_address = 64;
  int registrations_per_address = 5;  // accounts made by in-band registration per address per hour
  int scram_iterations = 4096;

  // [sm] (XEP-0198): how long a session whose connection died waits to be resumed
  int sm_resume_timeout_s = 300;
  // A client further behind than this many unacknowledged stanzas loses its stream (its
  // stanzas handled as undelivered: other resource, offline storage, or an error).
  std::size_t sm_max_unacked = 10'000;

  // [csi] (XEP-0352): whether client state indication is offered, and how many stanzas an
  // inactive client's session keeps back at most (then it queues them all and starts again).
  bool csi_enabled = true;
  std::size_t csi_max_held = 1000;

  // [archive] (XEP-0313): whether accounts' messages are archived at all, what an account that
  // set no preferences gets ("always", "roster" or "never"), and how long messages are kept
  // (days; 0: for ever).
  bool archive_enabled = true;
  std::string archive_default = "always";
  int archive_retention_days = 365;

  // [push] (XEP-0357): what a notification to a push service says of the last message (its
  // body is off by default: it would pass through the app server and the platform's push
  // service), and how often one registration is notified while its device stays away.
  bool push_include_body = false;
  bool push_include_sender = true;
  int push_min_interval_s = 60;

  // [http], [upload] (XEP-0363)
  std::string http_base_url;  // the URL clients reach the HTTP listener at; empty: its address
  // Origins (RFC 6454, "scheme://host[:port]", or "*") allowed to open a WebSocket; empty: any
  // origin whose host is the served domain or a loopback name. A client that sends no Origin
  // (not a browser) is always let in.
  std::vector<std::string> websocket_origins;
  // Converse.js's dist/ directory, served at /dist/; empty: looked for next to the binary.
  std::filesystem::path web_root;
  std::uint64_t upload_max_file_size = 100ull * 1024 * 1024;
  std::uint64_t upload_quota = 1'000'000'000;  // bytes stored per account
  int upload_expire_after_s = 7 * 24 * 3600;   // uploaded files are deleted after this

  // [contact] (XEP-0157): addresses by kind ("abuse", "admin", "feedback", "sales",
  // "security", "status", "support"), in the order of kContactKinds.
  std::vector<std::pair<std::string, std::vector<std::string>>> contact_addresses;
  // [extdisco] (XEP-0215)
  std::vector<ExternalService> external_services;
  std::string turn_secret;            // coturn's static-auth-secret (use-auth-secret); empty: none
  int turn_credential_ttl_s = 86400;  // lifetime of the TURN credentials handed out

  // [proxy65]
  std::string proxy65_host;                   // address announced to clients; empty: the bound one
  int proxy65_streams_per_account = 5;        // active relayed streams per requesting account
  std::int64_t proxy65_bytes_per_second = 0;  // per stream and direction; 0: no cap
  int proxy65_idle_timeout_s = 60;            // a stream (or a waiting connection) silent this long
};

// Reads a TOML file into `cfg` (keys documented in the README). Throws std::runtime_error with
// the file, line and problem on a bad file or an unknown key.
void load_config_file(const std::filesystem::path& file, Config& cfg);

}  // namespace kabar::server
