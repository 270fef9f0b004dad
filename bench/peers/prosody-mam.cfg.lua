
-- With ARCHIVE=on, bench/run appends this file (filled in like the rest) after the VirtualHost
-- line above, so these are that host's settings: mod_mam archives every message with a body in
-- the sender's and the recipient's archive (default_archive_policy = true, as kabard does by
-- default), in mod_storage_sql on SQLite (Debian's lua-dbi-sqlite3), as kabard's archive is on
-- SQLite. Only the archive store moves to SQL; accounts and rosters stay in the internal store
-- (storage falls back to default_storage, "internal", for stores not named here). Prosody's SQLite
-- settings are its defaults: one transaction per archived message, rollback journal.
modules_enabled = { "mam" }
default_archive_policy = true
storage = { archive = "sql" }
sql = { driver = "SQLite3", database = "@ARCHIVE_DB_DIR@/prosody.sqlite" }
