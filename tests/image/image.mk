# Test firmware images built with the arm-none-eabi toolchain, and the checks that run the
# validator on every one of them (tests/image/verdicts.sh).
IMAGE_DIR := $(BUILD)/tests/image

$(IMAGE_DIR)/mkdict: tests/image/mkdict.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LDFLAGS) $(DEP_LIBS)

$(IMAGE_DIR)/mkuf2: tests/image/mkuf2.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LDFLAGS)

$(IMAGE_DIR)/vcli: tests/image/vcli.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(DEP_LIBS)

$(IMAGE_DIR)/stamp: tests/image/build.sh tests/image/cm.c tests/image/link.ld.in tests/image/mkdict.c \
		$(IMAGE_DIR)/mkdict $(IMAGE_DIR)/mkuf2
	tests/image/build.sh $(IMAGE_DIR) $(IMAGE_DIR)/mkdict $(IMAGE_DIR)/mkuf2

CHECK_DEPS += $(IMAGE_DIR)/stamp $(IMAGE_DIR)/vcli tests/image/table.py
CHECK_TESTS += tests/image/verdicts.sh
