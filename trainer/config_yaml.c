// trainer/config_yaml.c: loading a config: the YAML file, the overrides, the preset.
//
// A config is built in layers: table defaults, then the model preset named by
// model.preset (model_preset_apply), then the YAML file, then the command-line
// overrides "section.key=value" in order. The YAML file may nest keys under their
// section (`train:` / `  lr: 3e-4`) or spell them flat (`train.lr: 3e-4`).
// docs/config.md is the user's description of all this.
//
// This file only walks the input and says where each value came from; the key table,
// and parsing and checking one value, are config.c's (through trainer/config_keys.h).
// It is the only file that talks to libfyaml.
//
// Everything here handles user input, so nothing asserts: each problem is reported as
// exactly one line on stderr naming the file (and line) or the override, the key, and
// what is wrong, and config_load returns 2 (the "bad input" exit code of DESIGN.md).
// libfyaml is told to collect its diagnostics instead of printing them, so its errors
// come out in the same one-line form.
#include "trainer/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <libfyaml.h>

#include "trainer/config_keys.h"
#include "trainer/model.h"   // model_preset_apply, model_preset_names

// ---------------------------------------------------------------------------------
// The YAML file

// One pass of applying the file and the overrides (config_load makes two when a
// preset is named; see there).
typedef struct yaml_load {
    anvil_config *cfg;
    const char *path;       // for messages
    int preset_override;    // 1 + index of the last override that set model.preset, or 0
    int line_of[];          // (config_n_keys) line where each key was set (0: not yet), to
                            // catch repeats; config_load allocates it with the struct
} yaml_load;

// Print "anvil: PATH:LINE: msg" (or without the line when line <= 0) to stderr.
static void file_error(const yaml_load *ld, int line, const char *msg) {
    if (line > 0) fprintf(stderr, "anvil: %s:%d: %s\n", ld->path, line, msg);
    else fprintf(stderr, "anvil: %s: %s\n", ld->path, msg);
}

// Return the 1-based line of a scalar node, or `fallback` when libfyaml has no token.
static int node_line(struct fy_node *n, int fallback) {
    struct fy_token *t = n ? fy_node_get_scalar_token(n) : NULL;
    const struct fy_mark *m = t ? fy_token_start_mark(t) : NULL;
    return m ? m->line + 1 : fallback;
}

// Return 1 if node n is a YAML null: absent, empty plain, ~ or null.
static int node_is_null(struct fy_node *n) {
    if (!n) return 1;
    if (fy_node_get_type(n) != FYNT_SCALAR || fy_node_get_style(n) != FYNS_PLAIN) return 0;
    size_t len;
    const char *s = fy_node_get_scalar(n, &len);
    if (!s || len == 0) return 1;
    return (len == 1 && s[0] == '~') ||
           (len == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
}

// Set key k from YAML node v (a scalar, or a list for string keys). Returns 0 or 2
// after printing the error.
static int yaml_set_key(yaml_load *ld, const config_key *k, struct fy_node *v, int line) {
    char err[CONFIG_MSG_MAX];
    int idx = (int)(k - config_keys);
    if (ld->line_of[idx]) {
        snprintf(err, sizeof err, "key '%s' is set twice (first on line %d)", k->name,
                 ld->line_of[idx]);
        file_error(ld, line, err);
        return 2;
    }
    ld->line_of[idx] = line;

    enum fy_node_type t = v ? fy_node_get_type(v) : FYNT_SCALAR;
    if (t == FYNT_SCALAR) {
        size_t len = 0;
        const char *s = v ? fy_node_get_scalar(v, &len) : NULL;
        if (!s) { s = ""; len = 0; }
        if (k->type == KEY_TYPE_STRING && node_is_null(v)) { s = ""; len = 0; }
        if (config_value_set(k, ld->cfg, s, len, err, sizeof err) != 0) {
            file_error(ld, line, err);
            return 2;
        }
        return 0;
    }
    if (t == FYNT_SEQUENCE && k->type == KEY_TYPE_STRING) {
        // A list of strings is joined with commas (data.train: [a.bin, b.bin]).
        char joined[CONFIG_STR + 1];
        size_t o = 0;
        void *it = NULL;
        struct fy_node *e;
        while ((e = fy_node_sequence_iterate(v, &it)) != NULL) {
            size_t len = 0;
            const char *s = fy_node_get_type(e) == FYNT_SCALAR ? fy_node_get_scalar(e, &len) : NULL;
            if (!s) {
                snprintf(err, sizeof err, "key '%s': expected a list of strings, got a nested %s",
                         k->name, fy_node_get_type(e) == FYNT_MAPPING ? "mapping" : "list");
                file_error(ld, node_line(e, line), err);
                return 2;
            }
            if (o + (o > 0) + len > CONFIG_STR) {
                snprintf(err, sizeof err, "key '%s': the list is longer than %d bytes joined",
                         k->name, CONFIG_STR - 1);
                file_error(ld, line, err);
                return 2;
            }
            if (o > 0) joined[o++] = ',';
            memcpy(joined + o, s, len);
            o += len;
        }
        if (config_value_set(k, ld->cfg, joined, o, err, sizeof err) != 0) {
            file_error(ld, line, err);
            return 2;
        }
        return 0;
    }
    snprintf(err, sizeof err, "key '%s': expected %s, got a %s", k->name, config_key_want(k),
             t == FYNT_MAPPING ? "mapping" : "list");
    file_error(ld, line, err);
    return 2;
}

// Apply every pair of mapping `map`, whose keys are prefixed with `prefix` ("" at the
// top). A mapping under a name that is not a key is a section (or a misspelt one, in
// which case its first key is reported with a suggestion). Returns 0 or 2.
static int yaml_apply_mapping(yaml_load *ld, struct fy_node *map, const char *prefix,
                              int parent_line) {
    char err[CONFIG_MSG_MAX];
    void *it = NULL;
    struct fy_node_pair *p;
    while ((p = fy_node_mapping_iterate(map, &it)) != NULL) {
        struct fy_node *kn = fy_node_pair_key(p);
        struct fy_node *v = fy_node_pair_value(p);
        size_t klen = 0;
        const char *ks = kn && fy_node_get_type(kn) == FYNT_SCALAR ? fy_node_get_scalar(kn, &klen) : NULL;
        if (!ks) {
            file_error(ld, parent_line, "a mapping key must be a plain name, not a list or mapping");
            return 2;
        }
        int line = node_line(kn, parent_line);

        // name = prefix "." key (or key alone at the top)
        char name[CONFIG_NAME_MAX + 1];
        size_t plen = strlen(prefix);
        size_t nlen = plen + (plen > 0) + klen;
        if (nlen > CONFIG_NAME_MAX) {
            char shown[4 * CONFIG_QUOTE_MAX];
            config_text_excerpt(shown, sizeof shown, ks, klen);
            snprintf(err, sizeof err, "unknown key '%s'", shown);
            file_error(ld, line, err);
            return 2;
        }
        memcpy(name, prefix, plen);
        if (plen) name[plen] = '.';
        memcpy(name + plen + (plen > 0), ks, klen);
        name[nlen] = '\0';

        const config_key *k = config_key_find(name, nlen);
        if (k) {
            if (yaml_set_key(ld, k, v, line) != 0) return 2;
            continue;
        }
        int is_map = v && fy_node_get_type(v) == FYNT_MAPPING;
        int is_section = config_key_is_section(name, nlen);
        if (is_map && (is_section || fy_node_mapping_item_count(v) > 0)) {
            if (yaml_apply_mapping(ld, v, name, line) != 0) return 2;
            continue;
        }
        if (is_section && node_is_null(v)) continue;   // "train:" with every key commented out
        if (is_section) {
            snprintf(err, sizeof err, "'%s' is a section: expected a mapping of its keys", name);
            file_error(ld, line, err);
            return 2;
        }
        config_msg_unknown_key(err, sizeof err, name, nlen);
        file_error(ld, line, err);
        return 2;
    }
    return 0;
}

// Read the whole file into a malloc'd buffer. Returns 0, or -1 with errno set.
static int file_read_all(const char *path, char **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    int saved = 0;
    if (!b) { saved = ENOMEM; goto fail; }
    for (;;) {
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) { saved = ENOMEM; goto fail; }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) { saved = errno ? errno : EIO; goto fail; }
            break;
        }
    }
    fclose(f);
    *buf = b;
    *len = n;
    return 0;
fail:
    free(b);
    fclose(f);
    errno = saved;
    return -1;
}

// Return 1 if the text holds nothing but blank lines and comments.
static int text_is_blank(const char *s, size_t len) {
    int in_comment = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n') in_comment = 0;
        else if (in_comment || s[i] == ' ' || s[i] == '\t' || s[i] == '\r') continue;
        else if (s[i] == '#') in_comment = 1;
        else return 0;
    }
    return 1;
}

// Return 0 if the len bytes of s are valid UTF-8, else the 1-based line of the first
// bad byte. (libfyaml silently yields no document for some invalid input.)
static int utf8_bad_line(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    int line = 1;
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        size_t extra = c < 0x80 ? 0 : (c >= 0xc2 && c <= 0xdf) ? 1 : (c >= 0xe0 && c <= 0xef) ? 2
                     : (c >= 0xf0 && c <= 0xf4) ? 3 : 99;
        if (extra == 99 || i + extra >= len + (extra == 0)) return line;
        for (size_t j = 1; j <= extra; j++)
            if ((u[i + j] & 0xc0) != 0x80) return line;
        if (c == '\n') line++;
        i += 1 + extra;
    }
    return 0;
}

static void diag_silent(struct fy_diag *diag, void *user, const char *buf, size_t len) {
    (void)diag; (void)user; (void)buf; (void)len;
}

// Print the first error libfyaml collected as "anvil: PATH:LINE:COL: YAML syntax error: ..."
// (or a generic line when it collected none).
static void yaml_syntax_error(const yaml_load *ld, struct fy_diag *diag) {
    void *it = NULL;
    struct fy_diag_error *e;
    while ((e = fy_diag_errors_iterate(diag, &it)) != NULL) {
        if (e->type < FYET_ERROR) continue;
        char shown[4 * CONFIG_QUOTE_MAX];
        const char *m = e->msg ? e->msg : "?";
        config_text_excerpt(shown, sizeof shown, m, strlen(m));
        if (e->line > 0)
            fprintf(stderr, "anvil: %s:%d:%d: YAML syntax error: %s\n", ld->path, e->line,
                    e->column, shown);
        else
            fprintf(stderr, "anvil: %s: YAML syntax error: %s\n", ld->path, shown);
        return;
    }
    fprintf(stderr, "anvil: %s: YAML syntax error\n", ld->path);
}

// A parsed YAML file; root is NULL for an empty file.
typedef struct yaml_file {
    char *buf;                  // the file's bytes (libfyaml points into them)
    struct fy_diag *diag;
    struct fy_parser *fyp;
    struct fy_document *doc;
    struct fy_node *root;
} yaml_file;

static void yaml_file_close(yaml_file *yf) {
    if (yf->diag) fy_diag_reset_error(yf->diag);   // frees the collected errors; unref does not
    if (yf->doc) fy_parse_document_destroy(yf->fyp, yf->doc);
    if (yf->fyp) fy_parser_destroy(yf->fyp);
    if (yf->diag) fy_diag_unref(yf->diag);
    free(yf->buf);
    memset(yf, 0, sizeof *yf);
}

// Read and parse the YAML file `path` into yf (checked to be one document whose top
// level is a mapping, or empty). Returns 0, or 2 after printing one line; yf must be
// closed either way.
static int yaml_file_open(yaml_file *yf, const char *path) {
    yaml_load ld = {.path = path};
    size_t len = 0;
    memset(yf, 0, sizeof *yf);
    if (file_read_all(path, &yf->buf, &len) != 0) {
        fprintf(stderr, "anvil: config file '%s': %s\n", path, strerror(errno));
        return 2;
    }
    int bad = utf8_bad_line(yf->buf, len);
    if (bad) {
        file_error(&ld, bad, "not UTF-8 text");
        return 2;
    }

    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;                   // no FILE: everything goes to diag_silent...
    dcfg.output_fn = diag_silent;
    dcfg.colorize = false;
    yf->diag = fy_diag_create(&dcfg);
    if (!yf->diag) {
        file_error(&ld, 0, "cannot start the YAML parser");
        return 2;
    }
    fy_diag_set_collect_errors(yf->diag, true);   // ...and errors are kept for us
    struct fy_parse_cfg pcfg;
    memset(&pcfg, 0, sizeof pcfg);
    pcfg.flags = FYPCF_QUIET | FYPCF_RESOLVE_DOCUMENT;   // resolve: aliases become values
    pcfg.diag = yf->diag;
    yf->fyp = fy_parser_create(&pcfg);
    if (!yf->fyp || fy_parser_set_string(yf->fyp, yf->buf, len) != 0) {
        file_error(&ld, 0, "cannot start the YAML parser");
        return 2;
    }
    yf->doc = fy_parse_load_document(yf->fyp);
    struct fy_document *extra = NULL;
    if (yf->doc && !fy_diag_got_error(yf->diag)) extra = fy_parse_load_document(yf->fyp);
    if (extra) {
        fy_parse_document_destroy(yf->fyp, extra);
        file_error(&ld, 0, "holds more than one YAML document (only one is allowed)");
        return 2;
    }
    if (fy_diag_got_error(yf->diag)) {
        yaml_syntax_error(&ld, yf->diag);
        return 2;
    }
    if (!yf->doc && !text_is_blank(yf->buf, len)) {
        file_error(&ld, 0, "YAML syntax error: no document could be read");
        return 2;
    }
    yf->root = yf->doc ? fy_document_root(yf->doc) : NULL;
    if (node_is_null(yf->root)) {
        yf->root = NULL;   // an empty file: every key keeps its default
    } else if (fy_node_get_type(yf->root) != FYNT_MAPPING) {
        file_error(&ld, node_line(yf->root, 1), "expected a mapping of keys at the top level");
        return 2;
    }
    return 0;
}

// ---------------------------------------------------------------------------------
// Overrides

// Apply override number i, "section.key=value". Returns 0 or 2 after printing one line.
static int override_apply(yaml_load *ld, const char *ov, int i) {
    char err[CONFIG_MSG_MAX], shown[4 * CONFIG_QUOTE_MAX];
    config_text_excerpt(shown, sizeof shown, ov, strlen(ov));
    const char *eq = strchr(ov, '=');
    if (!eq || eq == ov) {
        fprintf(stderr, "anvil: override '%s': expected section.key=value\n", shown);
        return 2;
    }
    size_t klen = (size_t)(eq - ov);
    const config_key *k = config_key_find(ov, klen);
    if (!k) {
        config_msg_unknown_key(err, sizeof err, ov, klen);
        fprintf(stderr, "anvil: override '%s': %s\n", shown, err);
        return 2;
    }
    if (config_value_set(k, ld->cfg, eq + 1, strlen(eq + 1), err, sizeof err) != 0) {
        fprintf(stderr, "anvil: override '%s': %s\n", shown, err);
        return 2;
    }
    if (k->offset == offsetof(anvil_config, model.preset)) ld->preset_override = i + 1;
    return 0;
}

// Apply the file's keys (root may be NULL) and then the overrides to ld->cfg.
// Returns 0 or 2 after printing one line.
static int config_apply(yaml_load *ld, struct fy_node *root, int n_overrides,
                        char *const *overrides) {
    memset(ld->line_of, 0, (size_t)config_n_keys * sizeof ld->line_of[0]);
    ld->preset_override = 0;
    if (root && yaml_apply_mapping(ld, root, "", 1) != 0) return 2;
    for (int i = 0; i < n_overrides; i++)
        if (override_apply(ld, overrides[i], i) != 0) return 2;
    return 0;
}

// Print the one line for an unknown model.preset, at the place that set it.
static void preset_error(const yaml_load *ld, char *const *overrides, const char *name) {
    char msg[CONFIG_MSG_MAX], shown[4 * CONFIG_QUOTE_MAX];
    config_text_excerpt(shown, sizeof shown, name, strlen(name));
    int o = snprintf(msg, sizeof msg, "key 'model.preset': unknown preset '%s' (expected one of:",
                     shown);
    for (const char *const *p = model_preset_names(); *p && o > 0 && (size_t)o < sizeof msg; p++)
        o += snprintf(msg + o, sizeof msg - (size_t)o, "%s %s", p == model_preset_names() ? "" : ",", *p);
    if (o > 0 && (size_t)o < sizeof msg) snprintf(msg + o, sizeof msg - (size_t)o, ")");
    if (ld->preset_override) {
        const char *ov = overrides[ld->preset_override - 1];
        config_text_excerpt(shown, sizeof shown, ov, strlen(ov));
        fprintf(stderr, "anvil: override '%s': %s\n", shown, msg);
    } else {
        const config_key *k = config_key_find("model.preset", strlen("model.preset"));
        file_error(ld, ld->line_of[k - config_keys], msg);
    }
}

// ---------------------------------------------------------------------------------
// Loading

// A preset sets every model key it defines, and the keys the user wrote must win over
// it wherever they come from. So the file and overrides are applied once to learn the
// final model.preset (and to report every error), then, if a preset is named, again
// on top of defaults + preset; a shape key left at (or set to) 0 takes the preset's.
int config_load(anvil_config *cfg, const char *path, int n_overrides,
                char *const *overrides) {
    int rc = 2;
    yaml_file yf;
    memset(&yf, 0, sizeof yf);
    yaml_load *ld = calloc(1, sizeof *ld + (size_t)config_n_keys * sizeof ld->line_of[0]);
    if (!ld) {
        fprintf(stderr, "anvil: config: out of memory\n");
        return 2;
    }
    ld->cfg = cfg;
    ld->path = path;
    config_defaults(cfg);
    if (path && yaml_file_open(&yf, path) != 0) goto out;
    if (config_apply(ld, yf.root, n_overrides, overrides) != 0) goto out;
    if (cfg->model.preset[0]) {
        char name[sizeof cfg->model.preset];
        memcpy(name, cfg->model.preset, sizeof name);
        config_defaults(cfg);
        if (model_preset_apply(&cfg->model, name) != 0) {
            preset_error(ld, overrides, name);
            goto out;
        }
        anvil_config *preset = malloc(sizeof *preset);
        if (!preset) {
            fprintf(stderr, "anvil: config: out of memory\n");
            goto out;
        }
        *preset = *cfg;
        int arc = config_apply(ld, yf.root, n_overrides, overrides);
        static const char zero[16];   // larger than any KEY_ZERO_PRESET member
        for (int i = 0; i < config_n_keys && arc == 0; i++) {
            const config_key *k = &config_keys[i];
            char *v = (char *)cfg + k->offset;
            if ((k->flags & KEY_ZERO_PRESET) && k->size <= sizeof zero && !memcmp(v, zero, k->size))
                memcpy(v, (char *)preset + k->offset, k->size);
        }
        free(preset);
        if (arc != 0) goto out;
    }
    rc = 0;
out:
    yaml_file_close(&yf);
    free(ld);
    return rc;
}
