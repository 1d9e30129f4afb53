# Integration tests: the unmodified daemon and CLI against temporary directories and,
# through tests/sim, simulated boards.
INTEGRATION_C := $(BUILD)/tests/integration/test_daemon

$(BUILD)/tests/integration/test_daemon: tests/integration/test_daemon.c $(SIM_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) -o $@ $< $(SIM_LIB) $(LIB) $(LDFLAGS) \
		$(SIM_LIBS) $(DEP_LIBS)

CHECK_TESTS += tests/integration/queue.sh tests/integration/journal.sh $(INTEGRATION_C) \
	       tests/integration/cli.sh
CHECK_DEPS  += $(INTEGRATION_C)
