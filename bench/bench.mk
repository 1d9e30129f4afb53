# Benchmarks (bench/): `make bench` builds what they drive, then runs bench-run.
# skrbench links the board simulator; it runs the real skrflashd, skrflashctl and dfu-util.
BENCH_BIN  := $(BUILD)/bench/skrbench
BENCH_OUT  ?= bench/results.json
BENCH_ARGS ?=

$(BENCH_BIN): bench/skrbench.c $(SIM_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(SIM_CFLAGS) $(CFLAGS) -o $@ $< $(SIM_LIB) $(LIB) $(LDFLAGS) \
		$(SIM_LIBS) $(DEP_LIBS) -lm

bench-run: $(BENCH_BIN) $(BUILD)/skrflashd $(BUILD)/skrflashctl
	@$(BENCH_BIN) --build $(BUILD) --out $(BENCH_OUT) --log $(BUILD)/bench/bench.log \
		$(BENCH_ARGS)

# make check: a quick run (tiny images, device time zero) proves `make bench` still works.
CHECK_TESTS += bench/smoke.sh
CHECK_DEPS  += $(BENCH_BIN)
