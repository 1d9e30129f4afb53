# Integration tests: the unmodified daemon and CLI against temporary directories and,
# through tests/sim, simulated boards.
CHECK_TESTS += tests/integration/queue.sh
