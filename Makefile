# kabar — the two commands a user needs are `make run` and `make test`; both install what is
# missing first (Debian packages, as root), then build.
SHELL := /bin/bash
JOBS ?= $(shell nproc)
FUZZ_RUNS ?= 200000
FUZZ_TIME ?= 1800
FUZZ_TARGETS ?=
RUN_DOMAIN ?= localhost
RUN_DATA ?= data

.PHONY: bench deps build build-asan build-tsan build-fuzz run test test-release test-asan test-tsan check-release check-asan check-tsan fuzz-short fuzz-long format clean

deps:
	@bash scripts/install-deps.sh

build:
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)

build-asan:
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)

# ThreadSanitizer: the server only (its shards are where threads meet).
build-tsan:
	@cmake --preset tsan >/dev/null
	@cmake --build --preset tsan -j $(JOBS) --target kabard kabarctl

build-fuzz:
	@cmake --preset fuzz >/dev/null
	@cmake --build --preset fuzz -j $(JOBS)

run: deps build
	@echo "kabard: serving $(RUN_DOMAIN) on 127.0.0.1:5222 (STARTTLS) and :5223 (TLS), file-transfer proxy on :7777, HTTP on :5280 and HTTPS on :5281 (upload, WebSocket), data in $(RUN_DATA)/"
	@echo "web client: http://localhost:5280/  (or https://localhost:5281/ after accepting the self-signed certificate)"
	exec build/bin/kabard --domain $(RUN_DOMAIN) --data-dir $(RUN_DATA) \
	  --c2s 127.0.0.1:5222 --c2s-tls 127.0.0.1:5223 --proxy65 127.0.0.1:7777 --http 127.0.0.1:5280 \
	  --https 127.0.0.1:5281 --allow-registration

# Unit and integration tests on the normal build, again on the ASan+UBSan build, the
# cross-shard tests under ThreadSanitizer, then a short fuzz run of every parser. The sanitizer
# and fuzz builds (and the fuzz run) go on at the lowest CPU priority while the tests before them
# run (scripts/test.sh). test-release, test-asan and test-tsan run one part each.
test: deps
	@bash scripts/test.sh

test-release: build
	@$(MAKE) --no-print-directory check-release

test-asan: build-asan
	@$(MAKE) --no-print-directory check-asan

test-tsan: build-tsan
	@$(MAKE) --no-print-directory check-tsan

# The check-* targets run the tests of a build already made.
check-release:
	cd build && ctest --output-on-failure -j 2 --timeout 300

check-asan:
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j 2 --timeout 300

# kabard under ThreadSanitizer with four shards and with the default: a data race makes it exit
# non-zero (TSan's exit code 66), which the tests check.
TSAN_TESTS ?= test_shards test_raw_protocol test_slixmpp test_sm_loss test_slow_reader test_carbons_blocking test_pep_raw test_websocket test_slixmpp_mam test_slixmpp_csi
check-tsan:
	@set -e; for t in $(TSAN_TESTS); do \
	  echo "== tsan: $$t"; \
	  TSAN_OPTIONS="halt_on_error=0 exitcode=66" /usr/bin/python3 tests/integration/$$t.py \
	    --kabard build-tsan/bin/kabard --kabarctl build-tsan/bin/kabarctl; \
	done

# Reproducible: a fixed seed and a fixed number of executions per target.
fuzz-short: build-fuzz
	@bash scripts/fuzz.sh runs $(FUZZ_RUNS)

# Opt-in: a long fuzz run, FUZZ_TIME seconds per target (30 minutes unless told), of every target
# or of FUZZ_TARGETS (e.g. FUZZ_TIME=300 FUZZ_TARGETS="jingle display_text" make fuzz-long), on the
# ASan+UBSan fuzz build. New inputs that reach new coverage are merged into fuzz/corpus/<target>/;
# the end prints each target's executions and coverage.
fuzz-long: build-fuzz
	@bash scripts/fuzz.sh time $(FUZZ_TIME) $(FUZZ_TARGETS)

# Opt-in benchmark against Prosody, ejabberd and the floor (not part of `make test`).
bench: deps build
	@bash bench/run

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf build build-asan build-tsan build-fuzz build-debug
