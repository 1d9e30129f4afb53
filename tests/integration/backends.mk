# Flash backends (Katapult, DfuSe), the 1200-baud touch, the worker and the one-shot flash,
# driven against simulated boards (tests/sim); links the simulator library as sim.mk says.
BACKENDS_TEST := $(BUILD)/tests/integration/test_backends

$(BACKENDS_TEST): tests/integration/test_backends.c $(SIM_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) -o $@ $< $(SIM_LIB) $(LIB) $(LDFLAGS) \
		$(SIM_LIBS) $(DEP_LIBS)

CHECK_TESTS += $(BACKENDS_TEST)
CHECK_DEPS  += $(BACKENDS_TEST)
