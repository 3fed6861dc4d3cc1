// data/tokenizer_cli.c: `anvil tokenizer encode|decode|train`.
//
// encode and decode work line by line so that their output can be compared with
// Hugging Face `tokenizers` one line at a time (tests/unit/test_tokenizer_hf.py):
//   encode: each input line, taken without its "\n" (a "\r" before it stays part of
//           the line, so CRLF text round-trips), becomes one line of space-separated
//           ids (an empty line for an empty input line). No BOS/EOS unless --special.
//           A last line without "\n" is a line too.
//   decode: each line of space-separated ids becomes the bytes of those tokens followed
//           by "\n"; an id out of range or a word that is not an id stops with exit 2
//           and names the line.
// train is data/bpe_train.c's tokenizer_train_main.
//
// Exit codes: 0 done, 1 out of memory or a write error, 2 bad input or usage.
#include "data/tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: anvil tokenizer encode [--special] TOKENIZER.json [FILE]\n"
    "       anvil tokenizer decode [--skip-special] TOKENIZER.json [FILE]\n"
    "       anvil tokenizer train ...   (see `anvil tokenizer train --help`)\n";

static const char HELP[] =
    "Byte-level BPE tokenization with a Hugging Face tokenizer.json (GPT-2, Llama-3,\n"
    "Qwen2 families; docs/tokenizer.md). Ids are identical to `tokenizers`.\n"
    "\n"
    "  encode   each line of FILE (default: stdin), without its \"\\n\", becomes a line\n"
    "           of space-separated ids; --special adds the post-processor's BOS/EOS\n"
    "  decode   each line of space-separated ids becomes the text of those tokens;\n"
    "           --skip-special leaves special added tokens out\n"
    "  train    train a new tokenizer.json from text\n";

// ---- buffered output ----------------------------------------------------------------------

typedef struct out_buf {
    char data[1 << 16];
    size_t n;
    int failed;
} out_buf;

// Write the buffer to stdout; a failed write is remembered in o->failed.
static void out_flush(out_buf *o) {
    if (o->n && fwrite(o->data, 1, o->n, stdout) != o->n) o->failed = 1;
    o->n = 0;
}

// Append s[0..n) (a block larger than the buffer goes straight out).
static void out_write(out_buf *o, const char *s, size_t n) {
    if (o->n + n > sizeof o->data) out_flush(o);
    if (n > sizeof o->data) {
        if (fwrite(s, 1, n, stdout) != n) o->failed = 1;
        return;
    }
    memcpy(o->data + o->n, s, n);
    o->n += n;
}

// Append " id" (no space before the first of a line) in decimal.
static void out_id(out_buf *o, uint32_t id, int first) {
    char b[16];
    int k = 16;
    do {
        b[--k] = (char)('0' + id % 10);
        id /= 10;
    } while (id);
    if (!first) b[--k] = ' ';
    out_write(o, b + k, (size_t)(16 - k));
}

// Open FILE, or stdin for NULL or "-". Returns the stream or NULL after printing why.
static FILE *open_input(const char *cmd, const char *path) {
    if (!path || strcmp(path, "-") == 0) return stdin;
    FILE *f = fopen(path, "rb");
    if (!f) fprintf(stderr, "anvil: tokenizer %s: cannot open '%s': %s\n", cmd, path, strerror(errno));
    return f;
}

// Finish output and input; the exit code given what happened so far.
static int finish(const char *cmd, FILE *in, out_buf *o, int rc) {
    out_flush(o);
    if (fflush(stdout) != 0) o->failed = 1;
    if (rc == 0 && ferror(in)) {
        fprintf(stderr, "anvil: tokenizer %s: read error: %s\n", cmd, strerror(errno));
        rc = 2;
    }
    if (in != stdin) fclose(in);
    if (rc == 0 && o->failed) {
        fprintf(stderr, "anvil: tokenizer %s: write error: %s\n", cmd, strerror(errno));
        rc = 1;
    }
    return rc;
}

// ---- encode / decode ----------------------------------------------------------------------

// `anvil tokenizer encode`. Returns the exit code.
static int encode_main(int argc, char **argv) {
    int special = 0, npos = 0;
    const char *pos[2] = {NULL, NULL};
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--special") == 0) special = 1;
        else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "anvil: tokenizer encode: unknown option '%s'\n%s", argv[i], USAGE);
            return 2;
        } else if (npos < 2) pos[npos++] = argv[i];
        else {
            fprintf(stderr, "anvil: tokenizer encode: too many arguments\n%s", USAGE);
            return 2;
        }
    }
    if (npos < 1) {
        fprintf(stderr, "anvil: tokenizer encode: no TOKENIZER.json given\n%s", USAGE);
        return 2;
    }
    tokenizer *t;
    int rc = tokenizer_load(&t, pos[0]);
    if (rc != 0) return rc;
    FILE *in = open_input("encode", pos[1]);
    tokenizer_encoder *e = in ? tokenizer_encoder_new(t) : NULL;
    if (!in || !e) {
        if (in && !e) fprintf(stderr, "anvil: tokenizer encode: out of memory\n");
        if (in && in != stdin) fclose(in);
        tokenizer_free(t);
        return in ? 1 : 2;
    }
    static out_buf o;
    char *line = NULL;
    size_t line_cap = 0, cap = 0;
    uint32_t *ids = NULL;
    ssize_t len;
    while (rc == 0 && (len = getline(&line, &line_cap, in)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') len--;
        int64_t k = tokenizer_encode(e, line, (size_t)len, special, &ids, &cap);
        if (k < 0) {
            fprintf(stderr, "anvil: tokenizer encode: out of memory\n");
            rc = 1;
            break;
        }
        for (int64_t i = 0; i < k; i++) out_id(&o, ids[i], i == 0);
        out_write(&o, "\n", 1);
    }
    rc = finish("encode", in, &o, rc);
    free(line);
    free(ids);
    tokenizer_encoder_free(e);
    tokenizer_free(t);
    return rc;
}

// `anvil tokenizer decode`. Returns the exit code.
static int decode_main(int argc, char **argv) {
    int skip = 0, npos = 0;
    const char *pos[2] = {NULL, NULL};
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--skip-special") == 0) skip = 1;
        else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "anvil: tokenizer decode: unknown option '%s'\n%s", argv[i], USAGE);
            return 2;
        } else if (npos < 2) pos[npos++] = argv[i];
        else {
            fprintf(stderr, "anvil: tokenizer decode: too many arguments\n%s", USAGE);
            return 2;
        }
    }
    if (npos < 1) {
        fprintf(stderr, "anvil: tokenizer decode: no TOKENIZER.json given\n%s", USAGE);
        return 2;
    }
    tokenizer *t;
    int rc = tokenizer_load(&t, pos[0]);
    if (rc != 0) return rc;
    FILE *in = open_input("decode", pos[1]);
    if (!in) {
        tokenizer_free(t);
        return 2;
    }
    const char *name = pos[1] && strcmp(pos[1], "-") != 0 ? pos[1] : "<stdin>";
    static out_buf o;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    unsigned long long lineno = 0;
    while (rc == 0 && (len = getline(&line, &line_cap, in)) >= 0) {
        lineno++;
        size_t i = 0, n = (size_t)len;
        while (rc == 0) {
            while (i < n && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n')) i++;
            if (i == n) break;
            size_t j = i;
            unsigned long long v = 0;
            int over = 0;
            while (j < n && line[j] >= '0' && line[j] <= '9') {
                v = v * 10 + (unsigned)(line[j++] - '0');
                over |= v > UINT32_MAX;
            }
            int end_ok = j == n || line[j] == ' ' || line[j] == '\t' || line[j] == '\r' || line[j] == '\n';
            if (j == i || !end_ok) {
                size_t w = j;
                while (w < n && line[w] != ' ' && line[w] != '\t' && line[w] != '\r' && line[w] != '\n') w++;
                fprintf(stderr, "anvil: tokenizer decode: %s line %llu: '%.*s' is not a token id\n",
                        name, lineno, (int)(w - i < 40 ? w - i : 40), line + i);
                rc = 2;
                break;
            }
            size_t blen;
            const char *bytes = over ? NULL : tokenizer_token_bytes(t, (uint32_t)v, &blen);
            if (!bytes) {
                fprintf(stderr, "anvil: tokenizer decode: %s line %llu: id %.*s is out of range "
                        "(the tokenizer has ids 0 to %u)\n", name, lineno, (int)(j - i < 40 ? j - i : 40),
                        line + i, tokenizer_vocab_size(t) - 1);
                rc = 2;
                break;
            }
            if (!(skip && tokenizer_token_is_special(t, (uint32_t)v))) out_write(&o, bytes, blen);
            i = j;
        }
        if (rc == 0) out_write(&o, "\n", 1);
    }
    rc = finish("decode", in, &o, rc);
    free(line);
    tokenizer_free(t);
    return rc;
}

int tokenizer_main(int argc, char **argv) {
    if (argc < 1) {
        fputs(USAGE, stderr);
        return 2;
    }
    const char *cmd = argv[0];
    if (strcmp(cmd, "encode") == 0) return encode_main(argc - 1, argv + 1);
    if (strcmp(cmd, "decode") == 0) return decode_main(argc - 1, argv + 1);
    if (strcmp(cmd, "train") == 0) return tokenizer_train_main(argc - 1, argv + 1);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(USAGE, stdout);
        fputs("\n", stdout);
        fputs(HELP, stdout);
        return 0;
    }
    fprintf(stderr, "anvil: tokenizer: unknown command '%s'\n%s", cmd, USAGE);
    return 2;
}
