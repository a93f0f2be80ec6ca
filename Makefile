# yichuang: `make demo` runs the main job, `make test` runs the whole suite.
# Both install and start what they need (PostgreSQL, RabbitMQ, Python packages) when it is
# missing; beyond make itself they expect only Debian and the Rust toolchain (README.md).

CARGO ?= cargo
SERVICES_ENV := target/services.env

.PHONY: all build demo test services toolchain lint bench bench-e2e clean chart-check chaos

all: build

services:
	bash scripts/services.sh

# cargo and a C compiler (gcc, installed when missing); no protoc: build.rs compiles proto/ with protox.
toolchain:
	CARGO=$(CARGO) bash scripts/toolchain.sh

build: toolchain
	$(CARGO) build --workspace --bins

demo: build
	bash scripts/services.sh
	bash scripts/demo.sh

# The build has no deadline (a cold one takes ~17 min on 2 cores); the run has one, so a test
# that hangs fails the suite instead of holding CI until it is killed.
TEST_DEADLINE ?= 1800
# Every test process logs here; after the run the logs are scanned for personal data left
# unmasked, and any finding fails the suite (docs/logging.md).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
TEST_LOGS := $(abspath $(TARGET_DIR)/test-logs)

test: toolchain services
	bash scripts/pyenv.sh
	# The browser tests' headless Chromium (testkit's browser module), from Debian when missing.
	bash scripts/browser.sh
	rm -rf $(TEST_LOGS)
	$(CARGO) test --workspace --all-targets --no-run
	# The binaries themselves (the chaos run starts yichuang-sim, which no test target builds).
	$(CARGO) build --workspace --bins
	bash scripts/chart-check.sh
	. ./$(SERVICES_ENV) && YICHUANG_TEST_LOGS=$(TEST_LOGS) timeout -k 30 $(TEST_DEADLINE) $(CARGO) test --workspace --all-targets
	# The chaos run's short form (scripts/chaos.sh): process kills, cluster node kills and a
	# PostgreSQL restart under load, then every accepted case reconciled; its processes' logs
	# are scanned with the suite's.
	YICHUANG_TEST_LOGS=$(TEST_LOGS) timeout -k 30 600 bash scripts/chaos.sh
	$(TARGET_DIR)/debug/yichuang logs scan --names tests/fixtures/personal-names.txt $(TEST_LOGS)

# The Helm chart, linted, rendered with several value sets and checked against the Kubernetes
# schemas (helm/check.py); with the binaries built, each adapter's rendered settings are run
# through `yichuang-adapter --check` too.
chart-check:
	bash scripts/chart-check.sh

# rustfmt and clippy are added to the toolchain (rustup component add) when missing.
lint:
	CARGO=$(CARGO) bash scripts/toolchain.sh --lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# docs/benchmarks.md. The adapters' CPU per task (kind http against the hand-written form-xml)
# needs no services (3 rounds of 5,000 tasks a side, under a minute). The end to end bench comes
# last.
bench: toolchain services
	. ./$(SERVICES_ENV) && $(CARGO) bench --bench intake && $(CARGO) bench --bench relay && $(CARGO) bench --bench overload
	$(CARGO) bench -p yichuang-adapters --bench adapter_cpu
	$(MAKE) bench-e2e

# Cases end to end through the real binaries (gateway, adapter, simulators) against the raw hops
# (lapin round trip, empty gRPC handler), about 3 minutes (docs/benchmarks.md, "End to end").
# YICHUANG_BENCH_SECS lengthens the phases; YICHUANG_BENCH_STORE=postgres with
# YICHUANG_BENCH_REPLICAS=2 runs two gateways on one PostgreSQL (docs/scaling.md).
bench-e2e: toolchain services
	$(CARGO) build --release -p yichuang-adapters -p yichuang-sim --bins
	. ./$(SERVICES_ENV) && $(CARGO) bench --bench e2e

# The chaos run's long form, on SQLite and on PostgreSQL (scripts/chaos.sh, docs/bus.md): 2,000
# cases over the seven departments on a three-node RabbitMQ cluster, 10 rounds of an adapter and a
# gateway SIGKILL, a cluster node SIGKILL (a queue leader) and a node stop, and a PostgreSQL
# restart every third round (about 15 minutes each); it prints a ledger each.
chaos: services
	$(CARGO) build --workspace --bins
	# Both runs, whatever the first gives; the cluster is stopped at the end either way.
	status=0; \
	CLUSTER_KEEP=1 CASES=2000 RATE=4 ROUNDS=10 SETTLE=300 bash scripts/chaos.sh || status=1; \
	STORE=postgres CASES=2000 RATE=4 ROUNDS=10 SETTLE=300 bash scripts/chaos.sh || status=1; \
	bash scripts/cluster.sh stop >/dev/null; exit $$status

clean:
	$(CARGO) clean
