# Simulated flash and STM32 ROM DfuSe device: unit tests and the dfu-util fidelity test.
# Sources are compiled straight into each program so these rules share no object files
# with sim.mk.
DFUSE_PC_CFLAGS := $(shell $(PKG_CONFIG) --cflags umockdev-1.0 glib-2.0 gobject-2.0 2>/dev/null)
DFUSE_PC_LIBS   := $(shell $(PKG_CONFIG) --libs umockdev-1.0 glib-2.0 gobject-2.0 2>/dev/null)
# GLib/umockdev headers are not -Wpedantic/-Wconversion clean: include them as system headers.
DFUSE_CFLAGS    := $(patsubst -I%,-isystem %,$(DFUSE_PC_CFLAGS))

$(BUILD)/tests/sim/test_flash: tests/sim/test_flash.c tests/sim/flash.c tests/sim/flash.h $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests -Itests/sim $(CFLAGS) -o $@ tests/sim/test_flash.c \
		tests/sim/flash.c $(LIB) $(LDFLAGS) -pthread $(DEP_LIBS)

CHECK_TESTS += $(BUILD)/tests/sim/test_flash
CHECK_DEPS  += $(BUILD)/tests/sim/test_flash

DFUSE_SIM_SRCS := tests/sim/dfuse.c tests/sim/usbdevfs.c tests/sim/flash.c tests/sim/dfu_util.c
$(BUILD)/tests/sim/test_dfuse: tests/sim/test_dfuse.c $(DFUSE_SIM_SRCS) tests/sim/dfuse.h \
		tests/sim/flash.h tests/sim/usbdevfs.h tests/sim/dfu_util.h $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests -Itests/sim $(CFLAGS) $(DFUSE_CFLAGS) -o $@ \
		tests/sim/test_dfuse.c $(DFUSE_SIM_SRCS) $(LIB) $(LDFLAGS) -pthread $(DEP_LIBS) \
		$(DFUSE_PC_LIBS)

CHECK_TESTS += $(BUILD)/tests/sim/test_dfuse
CHECK_DEPS  += $(BUILD)/tests/sim/test_dfuse
