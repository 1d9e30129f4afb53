# UART rescue (LPC176x ISP, STM32 AN3155): the ROM simulators proven by Debian's lpc21isp and
# stm32flash, and the rescue clients driven against the simulators.
UARTSIM := $(BUILD)/tests/integration/uartsim

$(UARTSIM): tests/integration/uartsim.c $(SIM_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) -o $@ $< $(SIM_LIB) $(LIB) $(LDFLAGS) \
		$(SIM_LIBS) $(DEP_LIBS)

CHECK_TESTS += tests/integration/rescue_tools.sh
CHECK_DEPS  += $(UARTSIM)

RESCUE_TEST := $(BUILD)/tests/integration/test_rescue
$(RESCUE_TEST): tests/integration/test_rescue.c $(SIM_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) -o $@ $< $(SIM_LIB) $(LIB) $(LDFLAGS) \
		$(SIM_LIBS) $(DEP_LIBS)

CHECK_TESTS += $(RESCUE_TEST)
CHECK_DEPS  += $(RESCUE_TEST)
