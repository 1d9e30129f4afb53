# Simulated LPC176x community DFU bootloader: its state machine, the dfu-util proof and the
# backend against it. Sources are compiled straight into the program, as for test_dfuse.
LPCDFU_SIM_SRCS := tests/sim/lpcdfu.c tests/sim/usbdevfs.c tests/sim/flash.c tests/sim/dfu_util.c
$(BUILD)/tests/sim/test_lpcdfu: tests/sim/test_lpcdfu.c $(LPCDFU_SIM_SRCS) tests/sim/lpcdfu.h \
		tests/sim/usbdevfs.h tests/sim/flash.h tests/sim/dfu_util.h $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests -Itests/sim $(CFLAGS) $(DFUSE_CFLAGS) -o $@ \
		tests/sim/test_lpcdfu.c $(LPCDFU_SIM_SRCS) $(LIB) $(LDFLAGS) -pthread $(DEP_LIBS) \
		$(DFUSE_PC_LIBS)

CHECK_TESTS += $(BUILD)/tests/sim/test_lpcdfu
CHECK_DEPS  += $(BUILD)/tests/sim/test_lpcdfu
