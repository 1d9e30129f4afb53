# make demo: the real daemon flashing simulated boards (tests/demo/demo.sh).
demo-run: $(BUILD)/skrflashd $(BUILD)/skrflashctl $(BUILD)/skrsim
	@BUILD=$(BUILD) tests/demo/demo.sh
