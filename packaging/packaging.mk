# SPDX-License-Identifier: GPL-2.0-or-later
# packaging.mk: system integration files, the Debian package and their tests.
# Included by the top Makefile. Targets: install-data uninstall-data deb deb-arm64-check
# deb-arm64.

# Where systemd, udev and polkit look (distro-specific: ask pkg-config, with fallbacks).
pkg_systemd_dir = $(or $(shell $(PKG_CONFIG) --variable=$(1) systemd 2>/dev/null),$(2))
SYSUSERSDIR    ?= $(call pkg_systemd_dir,sysusersdir,/usr/lib/sysusers.d)
TMPFILESDIR    ?= $(call pkg_systemd_dir,tmpfilesdir,/usr/lib/tmpfiles.d)
CATALOGDIR     ?= $(call pkg_systemd_dir,catalogdir,/usr/lib/systemd/catalog)
POLKITRULESDIR ?= /usr/share/polkit-1/rules.d
BASHCOMPDIR    ?= $(DATADIR)/bash-completion/completions

# Everything "make install" needs besides the binaries and the config file.
PKG_DATA = \
	systemd/skrflashd.service:$(SYSTEMDUNITDIR)/skrflashd.service \
	udev/70-skrflash.rules:$(UDEVDIR)/rules.d/70-skrflash.rules \
	systemd/skrflash.sysusers:$(SYSUSERSDIR)/skrflash.conf \
	systemd/skrflash.tmpfiles:$(TMPFILESDIR)/skrflash.conf \
	systemd/skrflash.catalog:$(CATALOGDIR)/skrflash.catalog \
	packaging/50-skrflash.rules:$(POLKITRULESDIR)/50-skrflash.rules \
	packaging/skrflashctl.bash-completion:$(BASHCOMPDIR)/skrflashctl \
	daemon/service/skrflashd.8:$(MANDIR)/man8/skrflashd.8 \
	daemon/cli/skrflashctl.1:$(MANDIR)/man1/skrflashctl.1 \
	conf/skrflash.conf.5:$(MANDIR)/man5/skrflash.conf.5

.PHONY: install-data uninstall-data deb deb-arm64-check deb-arm64

# The unit names the daemon by its installed path: follow SBINDIR (PREFIX=/usr/local too).
install-data:
	@set -e; for pair in $(PKG_DATA); do \
		echo "  INSTALL $${pair#*:}"; \
		$(INSTALL) -Dm644 "$${pair%%:*}" "$(DESTDIR)$${pair#*:}"; \
	done; \
	sed -i 's#^ExecStart=/usr/sbin/skrflashd#ExecStart=$(SBINDIR)/skrflashd#' \
		"$(DESTDIR)$(SYSTEMDUNITDIR)/skrflashd.service"

uninstall-data:
	@for pair in $(PKG_DATA); do rm -f "$(DESTDIR)$${pair#*:}"; done

# The package is built from a copy of the tracked files (plus new, not ignored ones, so that
# it can be tried before a commit) with packaging/debian as debian/. It is rebuilt only when
# one of those files changes, and kept only when lintian finds no error and no warning.
DEB_OUT        := $(BUILD)/deb
DEB_VERSION    := $(shell awk 'NR == 1 { gsub(/[()]/, "", $$2); print $$2 }' \
			packaging/debian/changelog 2>/dev/null)
DEB_ARCH       := $(shell dpkg --print-architecture 2>/dev/null)
DEB_FILE       := $(DEB_OUT)/skrflash_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_TREE_FILES := $(wildcard $(shell git ls-files -co --exclude-standard 2>/dev/null))
# A make running the tests must not pass its variables (CFLAGS of "make asan") down into
# the package build.
DEB_ENV        := env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES

deb: $(DEB_FILE)

# $(1): output directory, $(2): extra dpkg-buildpackage options
define deb_build
	rm -rf $(1) && mkdir -p $(1)/src
	git ls-files -z -co --exclude-standard | \
		tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C $(1)/src
	cp -a packaging/debian $(1)/src/debian
	chmod +x $(1)/src/debian/rules
	cd $(1)/src && $(DEB_ENV) DEB_BUILD_OPTIONS="nocheck parallel=2" \
		dpkg-buildpackage -us -uc -b $(2) >../build.log 2>&1 \
		|| { tail -n 40 ../build.log; echo "dpkg-buildpackage failed, log: $(1)/build.log"; exit 1; }
endef

$(DEB_FILE): $(DEB_TREE_FILES)
	$(call deb_build,$(DEB_OUT),)
	lintian --fail-on error,warning $(DEB_OUT)/*.changes \
		|| { rm -f $@; exit 1; }
	@test -f $@ || { echo "expected $@ (changelog version vs. VERSION?)"; exit 1; }
	@echo "built $@"

# Cross-building for Raspberry Pi OS 64-bit (Debian arm64). The light check needs only
# gcc-aarch64-linux-gnu: the build architecture is known to dpkg, the cross compiler
# exists and links a program for aarch64. deb-arm64 is the real cross build; it needs
# "dpkg --add-architecture arm64", crossbuild-essential-arm64 and the -dev libraries of
# Build-Depends for :arm64 (see docs/fleet.md).
deb-arm64-check:
	@set -e; \
	gnu=$$(dpkg-architecture -aarm64 -qDEB_HOST_GNU_TYPE 2>/dev/null); \
	test "$$gnu" = aarch64-linux-gnu || { echo "dpkg-architecture does not know arm64"; exit 1; }; \
	command -v $$gnu-gcc >/dev/null \
		|| { echo "missing $$gnu-gcc (gcc-aarch64-linux-gnu)"; exit 1; }; \
	mkdir -p $(BUILD)/arm64-check; \
	printf '#include <stdio.h>\nint main(void) { return puts("skrflash") < 0; }\n' \
		>$(BUILD)/arm64-check/hello.c; \
	$$gnu-gcc -O2 -o $(BUILD)/arm64-check/hello $(BUILD)/arm64-check/hello.c; \
	file -b $(BUILD)/arm64-check/hello | grep -q 'ARM aarch64' \
		|| { echo "cross compiler did not produce an aarch64 binary"; exit 1; }; \
	echo "arm64: dpkg-architecture OK, $$gnu-gcc OK"; \
	if dpkg --print-foreign-architectures | grep -qx arm64 && \
		dpkg-checkbuilddeps -a arm64 packaging/debian/control 2>/dev/null; then \
		echo "arm64 build dependencies installed: make deb-arm64 cross-builds the package"; \
	else \
		echo "arm64 -dev libraries not installed: make deb-arm64 would fail (see docs/fleet.md)"; \
	fi

deb-arm64:
	$(call deb_build,$(BUILD)/deb-arm64,-a arm64 -Pcross,nocheck)
	lintian --fail-on error,warning $(BUILD)/deb-arm64/*.changes
	@ls $(BUILD)/deb-arm64/*.deb

# Cheap checks first; pkg-deb builds the package that pkg-ansible then reuses.
CHECK_TESTS += $(addprefix tests/packaging/pkg-,unit.sh udev.sh polkit.sh docs.sh completion.sh \
	install-data.sh arm64.sh deb.sh ansible.sh)
