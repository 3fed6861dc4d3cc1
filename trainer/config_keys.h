// trainer/config_keys.h: the key table and the helpers shared by config.c and
// config_yaml.c. Internal to the trainer: nothing outside those two files includes it.
//
// config.c owns the table and everything that reads or writes one value (parse, check,
// format); config_yaml.c walks a YAML file and the overrides and hands each value to
// config_value_set. This header is the seam between them. The public interface stays
// trainer/config.h.
#ifndef ANVIL_TRAINER_CONFIG_KEYS_H
#define ANVIL_TRAINER_CONFIG_KEYS_H

#include <stddef.h>

#include "trainer/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum key_type {
    KEY_TYPE_INT,     // int
    KEY_TYPE_LONG,    // long (64-bit on every platform anvil builds on)
    KEY_TYPE_U64,     // unsigned long long, any value 0 .. 2^64-1
    KEY_TYPE_FLOAT,   // float
    KEY_TYPE_DOUBLE,  // double
    KEY_TYPE_BOOL,    // int holding 0 or 1
    KEY_TYPE_STRING,  // char array of `size` bytes
    KEY_TYPE_ENUM     // int-sized enum; the value is the index into `values`
} key_type;

#define KEY_LO_OPEN   1   // range excludes lo: (lo, ...
#define KEY_HI_OPEN   2   // range excludes hi: ..., hi)
#define KEY_AUTO_ZERO 4   // the word "auto" is accepted (and written) for 0
#define KEY_ZERO_PRESET 8 // 0 means "from model.preset": a 0 the user sets keeps the preset's

typedef struct config_key {
    const char *name;            // "section.key", or "key" for a top-level key
    key_type type;
    size_t offset;               // offsetof(anvil_config, member)
    size_t size;                 // sizeof the member (strings: capacity incl. NUL)
    const char *def;             // default, parsed like a user value
    double lo, hi;               // numeric range; hi = INFINITY: no upper bound
    int flags;                   // KEY_*
    const char *const *values;   // enum names, NULL-terminated, index = enum value
    const char *help;            // one line
} config_key;

// The table, in the order `anvil help config` and config_write_yaml show it.
extern const config_key config_keys[];
extern const int config_n_keys;   // entries in config_keys

#define CONFIG_MSG_MAX 2048     // one error line
#define CONFIG_NAME_MAX 256     // longest key name looked up; longer ones are unknown anyway
#define CONFIG_QUOTE_MAX 80     // user text shown in a message is cut to this many bytes

// Copy `len` bytes of user text into dst as a printable single-line excerpt (control
// bytes escaped, cut at CONFIG_QUOTE_MAX with "..."), so an error message stays one line.
void config_text_excerpt(char *dst, size_t n, const char *s, size_t len);

// Return the table entry for a full key name of `len` bytes, or NULL.
const config_key *config_key_find(const char *name, size_t len);

// Return 1 if `name` (len bytes) is a section, i.e. some key starts with "name.".
int config_key_is_section(const char *name, size_t len);

// Write "unknown key 'x' (did you mean 'y'?)" for a name of len bytes into msg.
void config_msg_unknown_key(char *msg, size_t n, const char *name, size_t len);

// Return what a value of key k must be, for messages ("an integer", ...).
const char *config_key_want(const config_key *k);

// Parse the len bytes of `text` as the value of key k and store it in cfg. Returns 0,
// or -1 with a message (no location prefix) in err.
int config_value_set(const config_key *k, anvil_config *cfg, const char *text, size_t len,
                     char *err, size_t errn);

#ifdef __cplusplus
}
#endif

#endif  // ANVIL_TRAINER_CONFIG_KEYS_H
