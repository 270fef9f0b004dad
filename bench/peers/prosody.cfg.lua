-- Prosody for kabar's benchmark (bench/run fills in @DIR@, @PORT@, @DOMAIN@). Loopback only,
-- plaintext allowed, registration on, run as root in the foreground; only the modules the
-- scenarios touch (roster, presence, SASL, TLS, registration), so Prosody is not charged for
-- features the load never uses. With ARCHIVE=on bench/run appends prosody-mam.cfg.lua (mod_mam on
-- SQLite) after the VirtualHost line, which must stay last.
run_as_root = true
daemonize = false
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
log = { warn = "@DIR@/prosody.log" }
network_backend = "epoll"
-- The listen backlog, as kabard's (SOMAXCONN, 4096) and ejabberd's here: 200 logins in flight
-- overflow the default 128. Prosody reads it from network_settings only; a top-level
-- tcp_backlog (here until 2026-11-25) is ignored.
network_settings = { tcp_backlog = 4096 }
interfaces = { "127.0.0.1" }
c2s_ports = { @PORT@ }
c2s_direct_tls_ports = { }
s2s_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }
-- smacks: XEP-0198 for the sm scenario (clients that do not enable it do not pay for it).
modules_enabled = { "roster", "saslauth", "tls", "disco", "register", "ping", "posix", "smacks" }
modules_disabled = { "s2s", "offline" }
authentication = "internal_hashed"
default_iteration_count = 4096
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
registration_allowlist = { "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5" }
certificates = "@DIR@/certs"
ssl = { certificate = "@DIR@/certs/@DOMAIN@.crt", key = "@DIR@/certs/@DOMAIN@.key" }

VirtualHost "@DOMAIN@"
