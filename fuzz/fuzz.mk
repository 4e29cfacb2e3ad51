# fuzz/fuzz.mk - libFuzzer targets (issue 5).  Included by the main Makefile
# (`-include fuzz/fuzz.mk`), which provides DEFS and LIBS.
#
#   make fuzz         builds build/fuzz/<target> with clang, libFuzzer, ASan, UBSan
#   make fuzz-run     runs each target in turn for FUZZ_RUNS executions (default
#                     10 million) on its corpus; new inputs go to
#                     build/fuzz/corpus/<target>/, crashes to fuzz/crashes/<target>/
#   make fuzz-merge   minimizes fuzz/corpus/<target>/ with what fuzz-run found
#                     (-merge=1, FUZZ_MERGE_FLAGS), in place
#   make fuzz-run FUZZ_TARGETS=fuzz_search FUZZ_RUNS=100000 FUZZ_FLAGS=-max_total_time=600
#
# The committed corpora are replayed without any fuzzer runtime by
# tests/test_fuzz_replay.c (a plain test of `make test` and `make test-win32`).
#
# Targets (fuzz/<target>.c, each documents its input format):
#   fuzz_wire    bytes from a remote peer to a listening graph (frames, messages)
#   fuzz_record  a record inside a FLOOD or a BATCH after a valid handshake
#   fuzz_search  search queries and attribute XML (PeerGraphSearchRecords/AddRecord)
#   fuzz_dbfile  database files (PeerGraphOpen) and export files (PeerGraphImportDatabase)

FUZZ_CC      ?= clang
FUZZ_TARGETS ?= fuzz_wire fuzz_record fuzz_search fuzz_dbfile
FUZZ_RUNS    ?= 10000000
FUZZ_FLAGS   ?=
# fuzz-merge keeps one input per coverage edge (not per hit-count bucket):
# a few hundred files per target instead of thousands.
FUZZ_MERGE_FLAGS ?= -use_counters=0
FUZZ_SAN      = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS   = -g -O1 $(FUZZ_SAN) -std=c99 -Wall -Wextra $(DEFS) -I. -Itests
FUZZ_LIB_SRCS = p2pgraph.c net_posix.c tests/fake_net.c
FUZZ_HDRS     = p2pgraph.h tests/fake_net.h tests/rawpeer.h tests/testutil.h fuzz/fuzz_common.h

# Longest input per target (-max_len).
FUZZ_MAXLEN_fuzz_wire   = 8192
FUZZ_MAXLEN_fuzz_record = 8192
FUZZ_MAXLEN_fuzz_search = 4096
FUZZ_MAXLEN_fuzz_dbfile = 16384

# The database code fsyncs: on a tmpfs the fuzzers run several times faster.
FUZZ_DB_DIR  ?= $(if $(wildcard /dev/shm),/dev/shm/p2pgraph-fuzz,build/tmp-fuzz-db)

.PHONY: fuzz fuzz-run fuzz-merge

fuzz: $(addprefix build/fuzz/,$(FUZZ_TARGETS))

build/fuzz/fuzz_%: fuzz/fuzz_%.c $(FUZZ_LIB_SRCS) $(FUZZ_HDRS)
	@command -v $(FUZZ_CC) >/dev/null || sh scripts/install-deps.sh clang
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(FUZZ_LIB_SRCS) -o $@ $(LIBS)

# shell: ml = the -max_len of target $$t
FUZZ_ML = case $$t in fuzz_wire) ml=$(FUZZ_MAXLEN_fuzz_wire);; fuzz_record) ml=$(FUZZ_MAXLEN_fuzz_record);; \
	    fuzz_search) ml=$(FUZZ_MAXLEN_fuzz_search);; *) ml=$(FUZZ_MAXLEN_fuzz_dbfile);; esac

fuzz-run: fuzz
	@mkdir -p $(FUZZ_DB_DIR)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus/$$t fuzz/corpus/$$t fuzz/crashes/$$t; \
	  dict=; [ -f fuzz/$$t.dict ] && dict=-dict=fuzz/$$t.dict; \
	  $(FUZZ_ML); \
	  echo "== $$t: $(FUZZ_RUNS) runs, -max_len=$$ml"; \
	  P2PG_FUZZ_DB_DIR=$(FUZZ_DB_DIR) nice -n 10 build/fuzz/$$t -max_len=$$ml -runs=$(FUZZ_RUNS) -timeout=20 \
	    -print_final_stats=1 -artifact_prefix=fuzz/crashes/$$t/ $$dict $(FUZZ_FLAGS) \
	    build/fuzz/corpus/$$t fuzz/corpus/$$t; \
	done

fuzz-merge: fuzz
	@mkdir -p $(FUZZ_DB_DIR)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  rm -rf build/fuzz/merged/$$t; mkdir -p build/fuzz/merged/$$t build/fuzz/corpus/$$t fuzz/corpus/$$t; \
	  $(FUZZ_ML); \
	  P2PG_FUZZ_DB_DIR=$(FUZZ_DB_DIR) build/fuzz/$$t -merge=1 -max_len=$$ml $(FUZZ_MERGE_FLAGS) \
	    build/fuzz/merged/$$t fuzz/corpus/$$t build/fuzz/corpus/$$t; \
	  rm -f fuzz/corpus/$$t/*; cp build/fuzz/merged/$$t/* fuzz/corpus/$$t/; \
	  echo "$$t: $$(ls fuzz/corpus/$$t | wc -l) files, $$(du -sh fuzz/corpus/$$t | cut -f1)"; \
	done

# The replay test includes the target sources.
build/test_fuzz_replay build/asan/test_fuzz_replay: $(wildcard fuzz/*.c fuzz/*.h)

# The seed generator (plain build; writes fuzz/corpus/<target>/seed-*).
build/fuzz/seeds: fuzz/seeds.c $(FUZZ_LIB_SRCS) $(FUZZ_HDRS)
	@mkdir -p build/fuzz
	$(CC) -std=c99 -Wall -Wextra -Werror -O1 -g $(DEFS) -I. -Itests $< $(FUZZ_LIB_SRCS) -o $@ -lcmocka $(LIBS)

.PHONY: fuzz-seeds
fuzz-seeds: build/fuzz/seeds
	P2PG_FUZZ_DB_DIR=build/tmp-fuzz-seeds build/fuzz/seeds fuzz/corpus
