# skrflash: `make help` lists the targets.
VERSION        := 0.1.0

# Install locations (GNU names; override on the command line).
PREFIX         ?= /usr/local
BINDIR         ?= $(PREFIX)/bin
SBINDIR        ?= $(PREFIX)/sbin
LIBEXECDIR     ?= $(PREFIX)/libexec
DATADIR        ?= $(PREFIX)/share
MANDIR         ?= $(DATADIR)/man
SYSCONFDIR     ?= /etc
LOCALSTATEDIR  ?= /var
RUNSTATEDIR    ?= /run
PKG_CONFIG     ?= pkg-config
UDEVDIR        ?= $(shell $(PKG_CONFIG) --variable=udevdir udev 2>/dev/null || echo /lib/udev)
SYSTEMDUNITDIR ?= $(shell $(PKG_CONFIG) --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
INSTALL        ?= install

# Toolchain. WERROR= lets a packager with a newer compiler opt out; nobody else should.
CC             ?= cc
CLANG          ?= clang
CFLAGS         ?= -O2 -g
WERROR         ?= -Werror
WARNINGS       := -Wall -Wextra -Wpedantic $(WERROR) \
                  -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wcast-qual \
                  -Wwrite-strings -Wformat=2 -Wvla -Wundef -Wimplicit-fallthrough \
                  -Wswitch-enum -Wconversion -Wsign-conversion
HARDENING      ?= -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
LIBS_PC        := libudev libusb-1.0 libconfig libsystemd sqlite3 zlib json-c libcrypto libelf libcurl
DEP_CFLAGS     := $(shell $(PKG_CONFIG) --cflags $(LIBS_PC) 2>/dev/null)
DEP_LIBS       := $(shell $(PKG_CONFIG) --libs $(LIBS_PC) 2>/dev/null)

override CPPFLAGS += -D_GNU_SOURCE -DSKRFLASH_VERSION='"$(VERSION)"' -Idaemon -MMD -MP
override CFLAGS   += -std=c11 $(WARNINGS) $(DEP_CFLAGS)
override LDFLAGS  += -pie -Wl,-z,relro,-z,now

BUILD          ?= build
# Sources by folder (docs/architecture.md): the shared modules at the top, then one folder per
# stage of the pipeline. tests/unit mirrors the same folders.
DAEMON_DIRS    := daemon daemon/proto daemon/image daemon/flash daemon/service daemon/cli
DAEMON_SRCS    := $(foreach d,$(DAEMON_DIRS),$(wildcard $(d)/*.c))
MAIN_SRCS      := daemon/service/skrflashd.c daemon/cli/skrflashctl.c
LIB_SRCS       := $(filter-out $(MAIN_SRCS),$(DAEMON_SRCS))
LIB_OBJS       := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRCS))
LIB            := $(BUILD)/libskrflash.a
UNIT_TESTS     := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%, \
		  $(wildcard tests/unit/test_*.c tests/unit/*/test_*.c))
FUZZERS        := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
REPLAYS        := $(FUZZERS:%=$(BUILD)/tests/replay_%)
C_FILES         = $(shell git ls-files -- '*.c' '*.h')
HEADERS         = $(shell git ls-files -- 'daemon/*.h')

# Test commands for `make check`: each fragment (*.mk) appends programs or scripts that
# exit 0 on success; CHECK_DEPS lists what they need built first.
CHECK_TESTS    := $(UNIT_TESTS)
CHECK_DEPS     := $(BUILD)/skrflashd $(BUILD)/skrflashctl $(UNIT_TESTS) $(REPLAYS)

.PHONY: all check check-run asan fuzz lint format install uninstall deps demo demo-run bench \
	bench-run clean help sim
.DEFAULT_GOAL := all

all: $(BUILD)/skrflashd $(BUILD)/skrflashctl

$(LIB): $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/skrflashd: $(BUILD)/daemon/service/skrflashd.o $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(DEP_LIBS)

$(BUILD)/skrflashctl: $(BUILD)/daemon/cli/skrflashctl.o $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(DEP_LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(HARDENING) -c -o $@ $<

# Unit tests link the daemon library (every object except the two mains).
$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests $(CFLAGS) -o $@ $^ $(LDFLAGS) $(DEP_LIBS)

# Corpus replay: the fuzz target plus a plain main(), built with $(CC).
$(BUILD)/tests/replay_%: tests/fuzz/%.c tests/fuzz/replay.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(DEP_LIBS)

# Fragments owned by their directories (simulator, images, integration, packaging, bench).
# The simulator's come first: the others link its library.
include $(sort $(wildcard tests/sim/*.mk))
include $(filter-out tests/sim/%,$(sort $(wildcard tests/*/*.mk packaging/*.mk bench/*.mk)))

CHECK_TESTS += $(FUZZERS:%=tests/fuzz/replay.sh:%) tests/config/run.sh tests/lint/test_includes.sh

# `make check` is one command on a fresh machine: install what is missing, then rebuild
# in a sub-make so that pkg-config sees the newly installed libraries.
check: deps
	@$(MAKE) --no-print-directory check-run

check-run: $(CHECK_DEPS)
	@BUILD=$(BUILD) tests/run.sh $(CHECK_TESTS)

SAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan CFLAGS="$(SAN_FLAGS)" \
		LDFLAGS="-fsanitize=address,undefined" HARDENING= SKRFLASH_ASAN=1 check-run

FUZZ_SECONDS ?= 60
fuzz: deps
	@mkdir -p build/fuzz
	@for f in $(FUZZERS); do \
		$(CLANG) $(CPPFLAGS) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined $(DEP_CFLAGS) \
			-o build/fuzz/$$f tests/fuzz/$$f.c $(LIB_SRCS) $(DEP_LIBS) || exit 1; \
		mkdir -p build/fuzz/$$f.new; \
		build/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) build/fuzz/$$f.new \
			tests/fuzz/corpus/$${f#fuzz_} || exit 1; \
	done

# Every header must compile on its own; the test file declares something so that a header
# of macros only does not make it an empty translation unit, which -Wpedantic rejects.
# Without -MMD: these compilations have no object whose dependencies to record.
LINT_CPPFLAGS = $(filter-out -MMD -MP,$(CPPFLAGS))
lint:
	clang-format --dry-run --Werror $(C_FILES)
	clang-tidy --quiet $(DAEMON_SRCS) -- $(LINT_CPPFLAGS) -std=c11 $(DEP_CFLAGS)
	cppcheck --quiet --error-exitcode=1 --enable=warning,style,performance,portability \
		--inline-suppr --library=.cppcheck.cfg --std=c11 -D_GNU_SOURCE -Idaemon $(DAEMON_SRCS)
	@for h in $(HEADERS); do \
		printf '#include "%s"\nextern int lint_header;\n' "$$h" | \
			$(CC) $(LINT_CPPFLAGS) -I. $(CFLAGS) -fsyntax-only -x c - || exit 1; \
	done
	tests/lint/includes.sh daemon
	shellcheck $(shell git ls-files -- '*.sh') .ci/run

format:
	clang-format -i $(C_FILES)

# Debian packages the build, the tests and the demo need.
DEB_DEPS := gcc make pkg-config libudev-dev libusb-1.0-0-dev libconfig-dev libsystemd-dev \
	libsqlite3-dev zlib1g-dev libjson-c-dev libssl-dev libelf-dev libcurl4-openssl-dev \
	umockdev libumockdev-dev libglib2.0-dev gcc-arm-none-eabi libnewlib-arm-none-eabi \
	binutils-arm-none-eabi dfu-util mtools dosfstools exfatprogs fdisk dbus python3 udev systemd \
	debhelper lintian fakeroot dpkg-dev ansible-core python3-apt mandoc man-db duktape \
	gcc-aarch64-linux-gnu libc6-dev-arm64-cross file
deps:
	@missing=$$(for p in $(DEB_DEPS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' \
			|| echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	line="apt-get install -y --no-install-recommends $$(echo $$missing)"; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing packages; run as root: apt-get update && $$line" >&2; exit 1; fi; \
	echo "installing: $$(echo $$missing)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq >/dev/null && $$line -qq >/dev/null || { echo "apt-get failed" >&2; exit 1; }

demo: deps
	@$(MAKE) --no-print-directory demo-run

bench: deps
	@$(MAKE) --no-print-directory bench-run

install: all install-data
	$(INSTALL) -Dm755 $(BUILD)/skrflashd $(DESTDIR)$(SBINDIR)/skrflashd
	$(INSTALL) -Dm755 $(BUILD)/skrflashctl $(DESTDIR)$(BINDIR)/skrflashctl
	$(INSTALL) -Dm644 conf/skrflash.conf $(DESTDIR)$(SYSCONFDIR)/skrflash/skrflash.conf

uninstall: uninstall-data
	rm -f $(DESTDIR)$(SBINDIR)/skrflashd $(DESTDIR)$(BINDIR)/skrflashctl

clean:
	rm -rf build

help:
	@echo "targets: all check asan fuzz lint format install uninstall deps demo bench deb clean"
	@echo "variables: BUILD= PREFIX= DESTDIR= WERROR= FUZZ_SECONDS="

-include $(LIB_OBJS:.o=.d) $(BUILD)/daemon/service/skrflashd.d $(BUILD)/daemon/cli/skrflashctl.d
