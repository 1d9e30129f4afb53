# make demo: the real daemon flashing simulated boards (tests/demo/demo.sh). The build runs
# first with its compiler lines in a log (shown only if it fails), so that the demo's output
# is the story alone.
demo-run:
	@mkdir -p $(BUILD)
	@echo "building skrflash and the board simulator (log: $(BUILD)/demo-build.log)"
	@$(MAKE) --no-print-directory $(BUILD)/skrflashd $(BUILD)/skrflashctl $(BUILD)/skrsim \
		>$(BUILD)/demo-build.log 2>&1 || { cat $(BUILD)/demo-build.log; exit 1; }
	@BUILD=$(BUILD) tests/demo/demo.sh

CHECK_TESTS += tests/demo/check_demo.sh
