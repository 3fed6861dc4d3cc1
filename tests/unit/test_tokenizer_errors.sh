#!/usr/bin/env bash
# tests/unit/test_tokenizer_errors.sh: a bad tokenizer.json, bad ids or a bad command
# line make `anvil tokenizer` fail the documented way: exit code 2 and one stderr line
# that names the file (or line) and the problem; never a crash.
#
# Usage: bash test_tokenizer_errors.sh /path/to/anvil   (meson runs it in the unit suite)
#
# Besides the listed cases, a valid tokenizer.json cut at every length and with bytes
# overwritten at random must load (exit 0) or be refused (exit 2), nothing else.
# Prints one line per check; exits 1 if any check failed.
set -u

. "$(dirname "$0")/testlib.sh"
testlib_init "$@"

# expect_error DESCRIPTION TAG "NEEDLE1|NEEDLE2|..." ARGS...
# Runs `anvil tokenizer ARGS...` with input.txt on stdin; passes when it exits with 2,
# stderr holds every NEEDLE (fixed strings) and is exactly one line mentioning TAG.
expect_error() {
    local desc=$1 tag=$2 needles=$3
    shift 3
    local rc=0
    timeout 60 "$anvil" tokenizer "$@" <input.txt >out.txt 2>err.txt || rc=$?
    check_error "$rc" "$desc" "$tag" "$needles"
}

# expect_usage DESCRIPTION "NEEDLE1|..." ARGS...: a command-line error exits with 2, says
# what is wrong on its first stderr line (the usage text may follow) and prints nothing.
expect_usage() {
    local desc=$1 needles=$2
    shift 2
    local rc=0 why="" needle list
    timeout 60 "$anvil" tokenizer "$@" <input.txt >out.txt 2>err.txt || rc=$?
    IFS='|' read -r -a list <<< "$needles"
    if [ "$rc" -ne 2 ]; then
        why="exit code $rc, expected 2"
    elif [ -s out.txt ]; then
        why="printed to stdout"
    else
        for needle in "${list[@]}"; do
            if ! head -n 1 err.txt | grep -qF -- "$needle"; then
                why="first stderr line lacks \"$needle\""
                break
            fi
        done
    fi
    if [ -z "$why" ]; then
        pass "$desc: $(head -n 1 err.txt)"
    else
        fail "$desc ($why); stderr: $(head -c 400 err.txt | tr '\n' '|')"
    fi
}

# A small valid byte-level BPE; variants below break one thing each.
good_json() {
    cat <<'EOF'
{"version": "1.0", "truncation": null, "padding": null,
 "added_tokens": [{"id": 5, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true}],
 "normalizer": null,
 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": true},
 "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false,
                    "use_regex": true},
 "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
             "use_regex": true},
 "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
           "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
           "ignore_merges": false,
           "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4},
           "merges": ["a b", "Ġ ab"]}}
EOF
}
good_json > good.json
echo "ab ab" > input.txt

# The valid file itself works, or every case below would pass for the wrong reason.
rc=0
out=$(timeout 60 "$anvil" tokenizer encode good.json input.txt 2>err.txt) || rc=$?
if [ "$rc" -eq 0 ] && [ "$out" = "2 4" ]; then
    pass "the valid tokenizer.json encodes 'ab ab' to '2 4'"
else
    fail "the valid tokenizer.json: exit $rc, output '$out'; stderr: $(head -c 300 err.txt)"
fi

# --- malformed tokenizer.json ----------------------------------------------------

echo 'this is not json' > not_json.json
expect_error "not JSON" not_json.json "not valid JSON|line 1" encode not_json.json

head -c 300 good.json > truncated.json
expect_error "truncated file" truncated.json "not valid JSON|line" encode truncated.json

: > empty.json
expect_error "empty file" empty.json "not valid JSON" encode empty.json

expect_error "missing file" missing.json "missing.json|cannot open|No such file" \
    encode missing.json

echo '[1, 2, 3]' > array.json
expect_error "top level not an object" array.json "expected a JSON object" encode array.json

good_json | sed 's/"model": {"type": "BPE"/"modelx": {"type": "BPE"/' > no_model.json
expect_error "missing model" no_model.json 'no "model" section' encode no_model.json

good_json | sed 's/"type": "BPE"/"type": "WordPiece"/' > wordpiece.json
expect_error "model not BPE" wordpiece.json "model.type|'WordPiece'|not supported" \
    encode wordpiece.json

good_json | sed 's/"merges": \["a b", "Ġ ab"\]/"merges": ["a b", "Ġ zz"]/' > bad_merge.json
expect_error "merge naming an unknown token" bad_merge.json \
    "model.merges[1]|'zz'|not in the vocab" encode bad_merge.json

good_json | sed 's/"merges": \["a b", "Ġ ab"\]/"merges": ["a b", "Ġ b"]/' > bad_merged.json
expect_error "merge whose result is not in the vocab" bad_merged.json \
    "model.merges[1]|'Ġb'|not in the vocab" encode bad_merged.json

good_json | sed 's/"merges": \["a b", "Ġ ab"\]/"merges": ["a b", 7]/' > merge_type.json
expect_error "merge entry of the wrong type" merge_type.json \
    "model.merges[1]|expected" encode merge_type.json

good_json | sed 's/"vocab": {[^}]*}/"vocab": ["a", "b"]/' > vocab_array.json
expect_error "vocab not an object" vocab_array.json "model.vocab|expected an object" \
    encode vocab_array.json

good_json | sed 's/"ab": 2/"ab": "two"/' > vocab_id.json
expect_error "vocab id not an integer" vocab_id.json "model.vocab['ab']|expected an id" \
    encode vocab_id.json

good_json | sed 's/"ab": 2/"ab": 0/' > vocab_dup.json
expect_error "two tokens with one id" vocab_dup.json "model.vocab|id 0" encode vocab_dup.json

good_json | sed 's/"pre_tokenizer": {"type": "ByteLevel"/"pre_tokenizer": {"type": "Metaspace"/' \
    > pre_metaspace.json
expect_error "unsupported pre-tokenizer type" pre_metaspace.json \
    "pre_tokenizer.type|'Metaspace'|not supported" encode pre_metaspace.json

good_json | sed 's/"normalizer": null/"normalizer": {"type": "NFKC"}/' > nfkc.json
expect_error "unsupported normalizer" nfkc.json "normalizer.type|'NFKC'" encode nfkc.json

good_json | sed 's/"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,/"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\\\s+"}, "behavior": "Removed", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false,/; s/^                   "use_regex": true},$/"use_regex": false}]},/' \
    > split_removed.json
expect_error "unsupported Split behaviour" split_removed.json \
    "pre_tokenizer.pretokenizers[0].behavior|'Removed'" encode split_removed.json

good_json | sed 's/"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,/"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false,/; s/^                   "use_regex": true},$/"use_regex": false}]},/' \
    > bad_regex.json
expect_error "regex that does not compile" bad_regex.json \
    "pre_tokenizer.pretokenizers[0].pattern|bad regex|offset" encode bad_regex.json

good_json | sed 's/"decoder": {"type": "ByteLevel"/"decoder": {"type": "WordPiece"/' > decoder.json
expect_error "unsupported decoder" decoder.json "decoder.type|'WordPiece'" encode decoder.json

good_json | sed 's/"post_processor": {"type": "ByteLevel"/"post_processor": {"type": "BertProcessing"/' \
    > post.json
expect_error "unsupported post-processor" post.json "post_processor.type|'BertProcessing'" \
    encode post.json

good_json | sed 's/"dropout": null/"dropout": 0.1/' > dropout.json
expect_error "BPE dropout" dropout.json "model.dropout" encode dropout.json

good_json | sed 's/"lstrip": false,/"lstrip": "yes",/' > added_flag.json
expect_error "added token flag of the wrong type" added_flag.json \
    "added_tokens[0].lstrip|expected true or false" encode added_flag.json

# --- decode input ---------------------------------------------------------------------

printf '2 4\n2 x 4\n' > input.txt
expect_error "decode: a word that is not an id" "line 2" "<stdin> line 2|'x'|not a token id" \
    decode good.json
printf '2 4\n\n4 99\n' > input.txt
expect_error "decode: an id out of range" "line 3" "<stdin> line 3|id 99|out of range" \
    decode good.json
printf '99999999999999999999\n' > input.txt
expect_error "decode: an id beyond 32 bits" "line 1" "line 1|out of range" decode good.json

# --- command line ---------------------------------------------------------------------

: > input.txt
expect_usage "no subcommand" "usage: anvil tokenizer"
expect_usage "unknown subcommand" "unknown command 'frobnicate'" frobnicate
expect_usage "encode without a tokenizer" "no TOKENIZER.json" encode
expect_usage "unknown option" "unknown option '--bogus'" encode --bogus good.json
expect_usage "too many arguments" "too many arguments" decode good.json a b
expect_error "unreadable input file" "nofile.txt" "cannot open 'nofile.txt'" \
    encode good.json nofile.txt

# --- no crash on damaged files ------------------------------------------------------------
# Every prefix of the valid file, and 200 copies with 1-4 bytes overwritten at random:
# exit 0 or 2 only.
size=$(wc -c < good.json)
bad=""
echo "ab ab" > input.txt
for ((k = 0; k < size; k++)); do
    head -c "$k" good.json > cut.json
    rc=0
    timeout 20 "$anvil" tokenizer encode cut.json input.txt >/dev/null 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then bad="$bad cut@$k:rc=$rc"; fi
done
RANDOM=7
for ((k = 0; k < 200; k++)); do
    cp good.json flip.json
    for ((j = 0; j <= RANDOM % 4; j++)); do
        printf "\\x$(printf %02x $((RANDOM % 256)))" |
            dd of=flip.json bs=1 seek=$((RANDOM % size)) conv=notrunc status=none
    done
    rc=0
    timeout 20 "$anvil" tokenizer encode flip.json input.txt >/dev/null 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
        bad="$bad flip#$k:rc=$rc"
        cp flip.json "flip_$k.json"
    fi
done
if [ -z "$bad" ]; then
    pass "$size truncations and 200 random corruptions: exit 0 or 2 every time"
else
    fail "damaged files:$bad"
fi

testlib_finish
