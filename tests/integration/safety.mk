# Safety gates (holder, units, moonraker). holder and moonraker are unit tests
# (tests/unit/service/test_holder.c, test_moonraker.c, the latter against fake_moonraker.py);
# units runs against fake_systemd on a private dbus-daemon started by units.sh.
$(BUILD)/tests/integration/fake_systemd: tests/integration/fake_systemd.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LDFLAGS) $(DEP_LIBS)

$(BUILD)/tests/integration/test_units: tests/integration/test_units.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests $(CFLAGS) -o $@ $^ $(LDFLAGS) $(DEP_LIBS)

CHECK_TESTS += tests/integration/units.sh
CHECK_DEPS += $(BUILD)/tests/integration/fake_systemd $(BUILD)/tests/integration/test_units
