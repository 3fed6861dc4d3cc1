#!/usr/bin/env bash
# tests/unit/test_config.sh: bad configs make `anvil train` fail the documented way.
#
# Usage: bash test_config.sh /path/to/anvil   (meson runs it in the unit suite)
#
# Every case feeds `anvil train` an invalid config (or a valid file with an invalid
# override), so nothing ever starts training: the config is checked before any data is
# read. Each must exit with 2 and print one line that names the file or override, the
# key, and what is wrong; libfyaml's own diagnostics must not leak. Prints one line
# per check; exits 1 if any check failed.
set -u

. "$(dirname "$0")/testlib.sh"
testlib_init "$@"

# expect_error DESCRIPTION TAG "NEEDLE1|NEEDLE2|..." ARGS...
# Runs `anvil ARGS...`; passes when it exits with 2 and stderr is one line that names
# TAG (the file or override) and holds every NEEDLE (fixed strings), so no second
# report (such as a libfyaml diagnostic) came out.
expect_error() {
    local desc=$1 tag=$2 needles=$3
    shift 3
    local rc=0
    timeout 60 "$anvil" "$@" </dev/null >out.txt 2>err.txt || rc=$?
    check_error "$rc" "$desc" "$tag" "$needles"
}

# --- the device -------------------------------------------------------------------

# Without a GPU (or without the cuda backend), device=cuda is refused with one line that
# says why; device=auto falls back to the cpu (the rest of the suites rely on that).
if ! nvidia-smi -L >/dev/null 2>&1; then
    printf 'model:\n  n_layer: 1\n' > device.yaml
    expect_error "device=cuda without a usable GPU" "device cuda" "anvil: device cuda: " \
        train device.yaml device=cuda data.train=none.bin
fi

# A layout that does not fit the device's memory is refused before anything is
# allocated: one line with the figures, exit 2 (a 1500 MiB device by the test hook,
# less than the plan plus the 1.5 GiB margin).
printf 'one two three four five six seven eight nine ten. %.0s' $(seq 200) > fit.txt
"$anvil" prepare text --out fit_data --val-frac 0 fit.txt >/dev/null
rc=0
ANVIL_TEST_DEVICE_MIB=1500 timeout 60 "$anvil" train model.preset=gpt2-tiny \
    model.vocab_size=257 data.train='fit_data/train_*.bin' data.val= train.steps=1 \
    train.seq_len=32 train.micro_batch=2 run.dir=fit_run </dev/null >out.txt 2>err.txt || rc=$?
check_error "$rc" "model larger than the device (hook)" "does not fit the device" \
    "needs|are free|lower train.micro_batch"

# `anvil plan` prints the same plan as `train` with the same arguments and exits 0
# when it fits, without reading data (data.train names no file) or creating run.dir;
# it refuses like train when it does not fit.
rc=0
timeout 60 "$anvil" train model.preset=gpt2-tiny model.vocab_size=257 \
    data.train='fit_data/train_*.bin' data.val= train.steps=1 train.seq_len=32 \
    train.micro_batch=2 run.dir=fit_run2 </dev/null >train_out.txt 2>err.txt || rc=$?
rc2=0
timeout 60 "$anvil" plan model.preset=gpt2-tiny model.vocab_size=257 \
    data.train=no_such_shard.bin data.val= train.steps=1 train.seq_len=32 \
    train.micro_batch=2 run.dir=plan_run </dev/null >plan_out.txt 2>plan_err.txt || rc2=$?
want=$(grep '^memory per rank' train_out.txt)
got=$(cat plan_out.txt)
if [[ $rc == 0 && $rc2 == 0 && -n $want && $got == "$want" && ! -s plan_err.txt &&
      ! -e plan_run ]]; then
    pass "plan: exit 0, prints what train prints ($got) and nothing else, no run.dir"
else
    fail "plan: train exit $rc, plan exit $rc2; train: '$want'; plan: '$got'; stderr: $(head -c 300 plan_err.txt)"
fi
rc=0
ANVIL_TEST_DEVICE_MIB=1500 timeout 60 "$anvil" plan model.preset=gpt2-tiny \
    model.vocab_size=257 data.train=no_such_shard.bin train.seq_len=32 train.micro_batch=2 \
    </dev/null >out.txt 2>err.txt || rc=$?
check_error "$rc" "plan: model larger than the device (hook)" "does not fit the device" \
    "needs|are free|lower train.micro_batch"

# --- errors in the file ----------------------------------------------------------

printf 'train:\n  steps: 10\n  lrr: 3e-4\n' > unknown_key.yaml
expect_error "unknown key, with suggestion" unknown_key.yaml \
    "unknown_key.yaml:3|unknown key 'train.lrr'|did you mean 'train.lr'" \
    train unknown_key.yaml

printf 'lr: 3e-4\n' > no_section.yaml
expect_error "key without its section" no_section.yaml \
    "unknown key 'lr'|did you mean 'train.lr'" \
    train no_section.yaml

printf 'train:\n  steps: abc\n' > wrong_type.yaml
expect_error "wrong type" wrong_type.yaml \
    "wrong_type.yaml:2|key 'train.steps'|expected an integer|'abc'" \
    train wrong_type.yaml

printf 'train:\n  lr:\n    peak: 1\n' > mapping.yaml
expect_error "mapping where a value is expected" mapping.yaml \
    "key 'train.lr'|mapping" \
    train mapping.yaml

printf 'optim:\n  beta1: 1.5\n' > out_of_range.yaml
expect_error "out-of-range value" out_of_range.yaml \
    "out_of_range.yaml:2|key 'optim.beta1'|1.5|out of range [0, 1)" \
    train out_of_range.yaml

printf 'train.steps: 0\n' > flat_range.yaml
expect_error "out-of-range value, flat key" flat_range.yaml \
    "key 'train.steps'|out of range" \
    train flat_range.yaml

printf 'train:\n  schedule: cosin\n' > bad_enum.yaml
expect_error "bad enum value lists the allowed ones" bad_enum.yaml \
    "key 'train.schedule'|'cosin'|cosine|linear|constant|wsd" \
    train bad_enum.yaml

printf 'device: gpu\n' > bad_device.yaml
expect_error "bad device" bad_device.yaml \
    "key 'device'|'gpu'|cpu|cuda|auto" \
    train bad_device.yaml

expect_error "missing file" does_not_exist.yaml \
    "config file 'does_not_exist.yaml'|No such file or directory" \
    train does_not_exist.yaml

printf 'train:\n  steps: [1, 2\n  lr: 1\n' > syntax.yaml
expect_error "YAML syntax error, one line" syntax.yaml \
    "syntax.yaml:|YAML syntax error" \
    train syntax.yaml

printf 'train:\n  lr: 1e-3\n  lr: 2e-3\n' > duplicate.yaml
expect_error "duplicate key" duplicate.yaml \
    "duplicate.yaml:3|duplicate key" \
    train duplicate.yaml

printf 'train:\n  lr: 1e-3\ntrain.lr: 2e-3\n' > twice.yaml
expect_error "key set twice (nested and flat)" twice.yaml \
    "twice.yaml:3|key 'train.lr' is set twice" \
    train twice.yaml

# --- errors in the overrides (the file itself is valid) --------------------------

printf '# every key at its default\n' > ok.yaml
expect_error "override without '='" "override 'train.lr'" \
    "override 'train.lr'|section.key=value" \
    train ok.yaml train.lr

expect_error "override with an unknown key" "override 'train.lrr=1'" \
    "unknown key 'train.lrr'|did you mean 'train.lr'" \
    train ok.yaml train.lrr=1

expect_error "override with a wrong type" "override 'model.tie_embeddings=maybe'" \
    "key 'model.tie_embeddings'|'maybe'" \
    train ok.yaml model.tie_embeddings=maybe

expect_error "override out of range" "override 'train.steps=-5'" \
    "key 'train.steps'|out of range" \
    train ok.yaml train.steps=-5

expect_error "override with a bad enum" "override 'data.order=shuffled'" \
    "key 'data.order'|random|sequential" \
    train ok.yaml data.order=shuffled

expect_error "unknown model preset" "override 'model.preset=gpt2-12'" \
    "key 'model.preset'|unknown preset 'gpt2-12'|gpt2-124m" \
    train ok.yaml model.preset=gpt2-12

# --- help --------------------------------------------------------------------------

rc=0
timeout 60 "$anvil" help config </dev/null >help.txt 2>err.txt || rc=$?
if [ "$rc" -ne 0 ]; then
    fail "anvil help config exits with $rc; stderr: $(head -c 400 err.txt | tr '\n' '|')"
else
    missing=""
    # The keys DESIGN.md fixes, which launch scripts and docs rely on.
    for key in model.family model.preset model.n_layer model.d_model model.n_head \
               model.n_kv_head model.ffn_dim model.vocab_size model.max_seq_len \
               data.train data.val train.steps train.seq_len train.micro_batch \
               train.global_batch_tokens train.lr train.seed run.dir parallel.dp \
               parallel.tp parallel.pp parallel.zero checkpoint.every checkpoint.keep \
               checkpoint.resume device; do
        grep -qE "^${key}[[:space:]]" help.txt || missing="$missing $key"
    done
    if [ -n "$missing" ]; then
        fail "anvil help config lacks:$missing"
    elif ! grep -E "^train\.lr[[:space:]]" help.txt | grep -qF "6e-4"; then
        fail "anvil help config does not show train.lr's default 6e-4"
    else
        pass "anvil help config lists every fixed key, e.g. $(grep -E '^train\.lr[[:space:]]' help.txt | tr -s ' ')"
    fi
fi

# The effective config round-trips: what `anvil config` prints (the YAML `train` writes
# into run.dir) loads back to the same values, and the preset and overrides took hold.
rc=0
"$anvil" config model.preset=llama-1b train.lr=1e-3 model.n_layer=3 >eff1.yaml 2>err.txt || rc=$?
"$anvil" config eff1.yaml >eff2.yaml 2>>err.txt || rc=$?
if [ "$rc" -ne 0 ]; then
    fail "anvil config exits with $rc: $(head -c 400 err.txt | tr '\n' '|')"
elif ! cmp -s eff1.yaml eff2.yaml; then
    fail "effective config does not round-trip: $(diff eff1.yaml eff2.yaml | head -5 | tr '\n' '|')"
elif ! grep -q "^  n_layer: 3$" eff1.yaml || ! grep -q "^  d_model: 2048$" eff1.yaml \
     || ! grep -q "^  rope_theta: 500000$" eff1.yaml || ! grep -q "^  lr: 0.001$" eff1.yaml; then
    fail "effective config lacks the preset's or the overrides' values"
else
    pass "effective config round-trips, preset llama-1b applied under explicit keys"
fi

testlib_finish
