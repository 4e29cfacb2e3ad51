# p2pgraph - plain make.  `make demo` runs the demo, `make test` the suite.
# Both install missing Debian/Ubuntu packages first (scripts/install-deps.sh).

CC      ?= cc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
WARN     = -std=c99 -Wall -Wextra -Werror
DEFS     = -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
ALL_CFLAGS = $(WARN) $(DEFS) $(CFLAGS) -I. -Ibuild/gen
LIBS     = -lmbedtls -lmbedx509 -lmbedcrypto -lm
CMOCKA   = -lcmocka
SAN      = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

LIB_SRCS = p2pgraph.c net_posix.c
HDRS     = p2pgraph.h
TEST_SUPPORT_SRCS = tests/fake_net.c
TEST_PROGS = test_fake_net test_map test_slab test_api test_handshake test_records test_search test_data test_graph test_loopback test_transfer test_fuzz_replay test_security test_tls_interop test_alloc test_limits test_ecdsa_records
EXAMPLES = two_nodes poll_host epoll_host demo secure_graph
BENCHES  = connect sync flood store data scale multihost tls

TEST_BINS = $(addprefix build/,$(TEST_PROGS))
ASAN_BINS = $(addprefix build/asan/,$(TEST_PROGS))

.PHONY: all deps deps-bench test test-native test-asan test-seeds bench-netns valgrind demo examples bench clean check-clang

all: build/libp2pgraph.a examples $(TEST_BINS)

deps:
	@sh scripts/install-deps.sh

# bench_data also measures ENet: only `make bench` (and build/bench_data) need libenet-dev.
deps-bench: deps
	@sh scripts/install-deps.sh libenet-dev

build/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

build/libp2pgraph.a: build/obj/p2pgraph.o build/obj/net_posix.o
	ar rcs $@ $^

# test_search includes section 5b of the core (static functions) extracted here.
build/gen/search_module.inc: p2pgraph.c
	@mkdir -p build/gen
	awk '/5b\. Record attributes and searches/{p=1} /\/\* 6\. Database file/{p=0} p' p2pgraph.c > $@
# test_map includes section 1b (the hash map) the same way.
build/gen/map_module.inc: p2pgraph.c
	@mkdir -p build/gen
	awk '/1b\. Hash maps/{p=1} /\/\* 1c\. Record slab/{p=0} p' p2pgraph.c > $@
# test_slab includes section 1c (the record slab) the same way.
build/gen/slab_module.inc: p2pgraph.c
	@mkdir -p build/gen
	awk '/1c\. Record slab/{p=1} /\/\* 2\. Library state/{p=0} p' p2pgraph.c > $@
WIN32_EXTRA_CFLAGS += -Ibuild/gen
win32-build: build/gen/search_module.inc build/gen/map_module.inc build/gen/slab_module.inc

build/test_%: build/gen/search_module.inc build/gen/map_module.inc build/gen/slab_module.inc tests/test_%.c $(TEST_SUPPORT_SRCS) $(LIB_SRCS) $(HDRS) tests/*.h
	@mkdir -p build
	$(CC) $(ALL_CFLAGS) -Itests tests/test_$*.c $(TEST_SUPPORT_SRCS) $(LIB_SRCS) -o $@ $(CMOCKA) $(LIBS)

build/asan/test_%: build/gen/search_module.inc build/gen/map_module.inc build/gen/slab_module.inc tests/test_%.c $(TEST_SUPPORT_SRCS) $(LIB_SRCS) $(HDRS) tests/*.h
	@mkdir -p build/asan
	$(CC) $(ALL_CFLAGS) $(SAN) -Itests tests/test_$*.c $(TEST_SUPPORT_SRCS) $(LIB_SRCS) -o $@ $(CMOCKA) $(LIBS)

build/ex_%: examples/%.c build/libp2pgraph.a
	$(CC) $(ALL_CFLAGS) $< build/libp2pgraph.a -o $@ $(LIBS)

build/bench_%: bench/%.c bench/bench_util.h build/libp2pgraph.a
	$(CC) $(ALL_CFLAGS) $< build/libp2pgraph.a -o $@ $(LIBS)

# bench_scale also includes the scale harness (bench/scale_harness.h).
build/bench_scale: bench/scale_harness.h

build/bench_data: bench/data.c bench/bench_util.h build/libp2pgraph.a | deps-bench
	$(CC) $(ALL_CFLAGS) $< build/libp2pgraph.a -o $@ $(LIBS) -lenet

examples: $(addprefix build/ex_,$(EXAMPLES))

bench: deps-bench $(addprefix build/bench_,$(BENCHES))

test: deps
	@$(MAKE) --no-print-directory test-native test-asan test-seeds

test-native: $(TEST_BINS)
	@echo "== tests (native build) =="
	@sh scripts/run-tests.sh $(TEST_BINS)

test-asan: $(ASAN_BINS)
	@echo "== tests (ASan + UBSan build) =="
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 sh scripts/run-tests.sh $(ASAN_BINS)

# The maintenance tests again on 20 other fake-network seeds (P2PG_TEST_SEED):
# timing-dependent behaviour must not hang on one lucky schedule.
test-seeds: build/test_graph
	@echo "== test_graph on seeds 1..20 =="
	@for s in $$(seq 1 20); do P2PG_TEST_SEED=$$s build/test_graph >build/seeds.log 2>&1 \
	  || { cat build/seeds.log; echo "test_graph failed with P2PG_TEST_SEED=$$s"; exit 1; }; done; echo "seeds: 20 passed"

# A multi-host run: namespaces on a bridge, one process of K nodes each (root).
bench-netns: build/bench_multihost
	sh bench/netns.sh $(or $(M),4) $(or $(K),25) $(FAST)

valgrind: deps $(TEST_BINS)
	@command -v valgrind >/dev/null || sh scripts/install-deps.sh valgrind
	@for t in $(TEST_BINS); do echo "== valgrind $$t"; \
	  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect $$t >/dev/null 2>build/vg.log \
	  || { cat build/vg.log; exit 1; }; done; echo "valgrind: clean"

check-clang: deps
	@command -v clang >/dev/null || sh scripts/install-deps.sh clang
	$(MAKE) --no-print-directory clean-bins
	$(MAKE) --no-print-directory CC=clang all

clean-bins:
	rm -f build/test_* build/ex_* build/bench_* build/libp2pgraph.a build/obj/*.o

demo: deps build/ex_demo
	./build/ex_demo

clean:
	rm -rf build/obj build/asan build/test_* build/ex_* build/bench_* build/libp2pgraph.a build/win32 build/*.log build/tmp-*

-include win32.mk
-include fuzz/fuzz.mk
