# win32.mk - `make test-win32`: cross-builds the library and every test
# program for Windows with mingw-w64 and runs them under wine.
#
# Included by the main Makefile, which defines TEST_PROGS (names such as
# test_core, each built from tests/$(name).c) and TEST_SUPPORT_SRCS (sources
# linked into every test, e.g. tests/fake_net.c).  They may be defined before
# or after the include: test-win32 hands their final values to a sub-make
# that reads only this file, so the main Makefile sees just three phony
# targets.  WIN32_EXTRA_CFLAGS is passed on too.
#
#   build/win32-deps/   mbedTLS and cmocka for mingw (scripts/win32-deps.sh)
#   build/win32/obj/    objects;  build/win32/X.exe, build/win32/X.log

WIN32_MK       := $(lastword $(MAKEFILE_LIST))
WIN32_CC       ?= x86_64-w64-mingw32-gcc
WIN32_DEPS     ?= build/win32-deps
WIN32_OUT      ?= build/win32
WIN32_LIB_SRCS  = p2pgraph.c net_win32.c
WIN32_CFLAGS    = -std=c99 -Wall -Wextra -Werror -O1 -g -MMD -MP \
                  -I. -Itests -I$(WIN32_DEPS)/include $(WIN32_EXTRA_CFLAGS)
WIN32_LDFLAGS   = -static -static-libgcc -L$(WIN32_DEPS)/lib
WIN32_LDLIBS    = -lmbedtls -lmbedx509 -lmbedcrypto -lcmocka \
                  -lws2_32 -lbcrypt -liphlpapi -ladvapi32

ifndef WIN32_SUBMAKE
# ---- read by the main Makefile ---------------------------------------------
WIN32_SAVED_GOAL := $(.DEFAULT_GOAL)

.PHONY: test-win32 win32-build win32-deps

test-win32: win32-build
	sh scripts/run-wine-tests.sh $(TEST_PROGS:%=$(WIN32_OUT)/%.exe)

win32-build: win32-deps
	$(MAKE) --no-print-directory -f $(WIN32_MK) WIN32_SUBMAKE=1 win32-exes \
		TEST_PROGS="$(TEST_PROGS)" TEST_SUPPORT_SRCS="$(TEST_SUPPORT_SRCS)" \
		WIN32_EXTRA_CFLAGS="$(WIN32_EXTRA_CFLAGS)"

win32-deps:
	sh scripts/win32-deps.sh

# Including this file must not change the main Makefile's default goal.
.DEFAULT_GOAL := $(WIN32_SAVED_GOAL)

else
# ---- read by the sub-make ----------------------------------------------------
WIN32_OBJ          = $(WIN32_OUT)/obj
WIN32_LIB_OBJS     = $(WIN32_LIB_SRCS:%.c=$(WIN32_OBJ)/%.o)
WIN32_SUPPORT_OBJS = $(TEST_SUPPORT_SRCS:%.c=$(WIN32_OBJ)/%.o)
WIN32_DEP_LIBS     = $(WIN32_DEPS)/lib/libmbedtls.a $(WIN32_DEPS)/lib/libcmocka.a

# Objects are rebuilt when the compiler or flags change (not only sources).
WIN32_FLAGS_FILE   = $(WIN32_OBJ)/cflags.txt
WIN32_FLAGS_NOW   := $(WIN32_CC) $(WIN32_CFLAGS)
$(shell mkdir -p $(WIN32_OBJ) && { [ "$$(cat $(WIN32_FLAGS_FILE) 2>/dev/null)" = '$(WIN32_FLAGS_NOW)' ] || \
        echo '$(WIN32_FLAGS_NOW)' > $(WIN32_FLAGS_FILE); })

.PHONY: win32-exes
win32-exes: $(TEST_PROGS:%=$(WIN32_OUT)/%.exe)

$(WIN32_OUT)/%.exe: $(WIN32_OBJ)/tests/%.o $(WIN32_LIB_OBJS) $(WIN32_SUPPORT_OBJS) $(WIN32_DEP_LIBS)
	$(WIN32_CC) $(WIN32_LDFLAGS) -o $@ $(filter %.o,$^) $(WIN32_LDLIBS)

$(WIN32_OBJ)/%.o: %.c $(WIN32_FLAGS_FILE)
	@mkdir -p $(@D)
	$(WIN32_CC) $(WIN32_CFLAGS) -c $< -o $@

# Keep objects of the tests (make would delete them as intermediates).
.SECONDARY:

-include $(shell find $(WIN32_OBJ) -name '*.d' 2>/dev/null)
endif
