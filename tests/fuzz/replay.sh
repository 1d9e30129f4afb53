#!/bin/sh
# Replays the committed corpus of one fuzz target: tests/fuzz/replay.sh fuzz_NAME
set -eu
name=${1#fuzz_}
exec "${BUILD:-build}/tests/replay_fuzz_$name" tests/fuzz/corpus/"$name"/*
