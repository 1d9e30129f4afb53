# Board simulator (tests/sim): the simulator library, its self-tests and the skrsim runner.
# GLib/umockdev headers are not -Wpedantic/-Wconversion clean: include them as system headers.
SIM_PC_CFLAGS := $(shell $(PKG_CONFIG) --cflags umockdev-1.0 glib-2.0 gobject-2.0 2>/dev/null)
SIM_LIBS      := $(shell $(PKG_CONFIG) --libs umockdev-1.0 glib-2.0 gobject-2.0 2>/dev/null) \
		 -pthread -ldl
SIM_CFLAGS    := $(patsubst -I%,-isystem %,$(SIM_PC_CFLAGS)) -Itests -Itests/sim
# flash.c and dfuse.c belong to the DfuSe simulator; the board simulator links them in.
# dfu_util.c is only for the DFU fidelity tests (dfuse.mk, lpcdfu.mk).
SIM_SRCS      := $(filter-out tests/sim/skrsim.c tests/sim/test_%.c tests/sim/dfu_util.c, \
		 $(wildcard tests/sim/*.c))
SIM_OBJS      := $(patsubst tests/sim/%.c,$(BUILD)/tests/sim/obj/%.o,$(SIM_SRCS))
SIM_LIB       := $(BUILD)/tests/sim/libsim.a
SIM_TESTS     := $(patsubst tests/sim/%.c,$(BUILD)/tests/sim/%,$(wildcard tests/sim/test_sim_*.c))

$(BUILD)/tests/sim/obj/%.o: tests/sim/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) $(HARDENING) -c -o $@ $<

$(SIM_LIB): $(SIM_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/tests/sim/test_sim_%: tests/sim/test_sim_%.c $(SIM_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) -o $@ $< $(SIM_LIB) $(LIB) $(LDFLAGS) \
		$(SIM_LIBS) $(DEP_LIBS)

$(BUILD)/skrsim: tests/sim/skrsim.c $(SIM_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) -o $@ $< $(SIM_LIB) $(LIB) $(LDFLAGS) \
		$(SIM_LIBS) $(DEP_LIBS)

sim: $(BUILD)/skrsim $(SIM_TESTS)

CHECK_TESTS += $(SIM_TESTS)
CHECK_DEPS  += $(SIM_TESTS) $(BUILD)/skrsim

-include $(SIM_OBJS:.o=.d)
.PHONY: sim
