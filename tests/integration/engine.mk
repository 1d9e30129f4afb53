# Flash engine integration tests: the unmodified daemon flashes simulated boards end to end
# (Katapult, ROM DFU, parallel jobs, refusals, rollback, interrupted jobs, safety gates,
# protocol faults). One program per group keeps each under a minute.
ENGINE_TESTS := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%, \
		$(filter-out tests/integration/test_engine_lib.c, \
		$(wildcard tests/integration/test_engine_*.c)))
ENGINE_LIB_OBJ := $(BUILD)/tests/integration/obj/test_engine_lib.o
# host programs outside the testbed's preload; plain libc, the service unit tests that talk to
# the fake Moonraker and OctoPrint link it too
HOSTPROC_OBJ   := $(BUILD)/tests/integration/obj/hostproc.o
HOSTPROC_UNITS := $(BUILD)/tests/unit/service/test_power $(BUILD)/tests/unit/service/test_moonraker \
		  $(BUILD)/tests/unit/service/test_octoprint

$(HOSTPROC_OBJ): tests/integration/hostproc.c tests/integration/hostproc.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(HOSTPROC_UNITS): $(HOSTPROC_OBJ)

$(ENGINE_LIB_OBJ): tests/integration/test_engine_lib.c tests/integration/test_engine_lib.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/integration/test_engine_%: tests/integration/test_engine_%.c $(ENGINE_LIB_OBJ) \
		$(HOSTPROC_OBJ) $(SIM_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) -o $@ $< $(ENGINE_LIB_OBJ) $(HOSTPROC_OBJ) \
		$(SIM_LIB) $(LIB) $(LDFLAGS) $(SIM_LIBS) $(DEP_LIBS)

# the klipper-unit scenario talks to fake_systemd (safety.mk builds it)
CHECK_TESTS += $(ENGINE_TESTS)
CHECK_DEPS  += $(ENGINE_TESTS) $(BUILD)/tests/integration/fake_systemd $(BUILD)/skrflashd \
	       $(BUILD)/skrflashctl
-include $(ENGINE_LIB_OBJ:.o=.d) $(HOSTPROC_OBJ:.o=.d)
