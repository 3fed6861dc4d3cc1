// checkpoint/h5.c: tensors and run state in HDF5 files.
//
// Per-rank files plus a global index (the issue allows either that or hyperslab writes
// into shared files): each writing rank puts its pieces, rectangles of global tensors,
// in its own file with plain serial HDF5, so no rank waits for another's I/O, nothing
// depends on MPI-IO or file locking working on the cluster's filesystem, and a
// checkpoint's write bandwidth is the sum of the ranks'. model.h5 is the index: for
// every tensor a virtual dataset (HDF5 >= 1.10 VDS) of the global shape whose
// mappings point at the pieces, with file names relative to the checkpoint directory,
// so h5py, h5dump and the loader under any layout read whole tensors or any slice of
// them without knowing which rank wrote what. Elements no piece covers read as NaN
// (the fill value), never as silent zeros.
//
// HDF5 prints its error stack by default; it is silenced, and on failure the innermost
// message of the stack is put into anvil's one-line error instead.
#include "checkpoint/checkpoint.h"
#include "checkpoint/ckpt_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

// ---- errors ---------------------------------------------------------------------------

static herr_t last_error_cb(unsigned n, const H5E_error2_t *e, void *ctx) {
    (void)n;
    char *out = ctx;
    if (e->desc && e->desc[0]) snprintf(out, 256, "%s", e->desc);
    return 0;
}

// The innermost description on HDF5's error stack ("" if none).
static const char *h5_error_text(char buf[256]) {
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, last_error_cb, buf);
    return buf;
}

static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static int h5_fail(const char *path, const char *what) {
    char buf[256];
    const char *t = h5_error_text(buf);
    fprintf(stderr, "anvil: checkpoint '%s': %s%s%s\n", path, what, t[0] ? ": " : "", t);
    return 2;
}

// ---- writing --------------------------------------------------------------------------

static void piece_path(const ckpt_piece *p, char *out, size_t n) {
    snprintf(out, n, "/%s/%s/%lld_%lld", p->kind, p->name, (long long)p->off[0],
             (long long)p->off[1]);
}

static hid_t intermediate_lcpl(void) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl >= 0) H5Pset_create_intermediate_group(lcpl, 1);
    return lcpl;
}

// Pieces of at least this many bytes start on a 4 KiB boundary, so that their data can
// be written with O_DIRECT (write.c); smaller ones are not worth the padding.
#define CKPT_ALIGN_THRESHOLD (64 << 10)

int ckpt_h5_write_pieces(const char *path, ckpt_piece *p, const float *const *data, int n,
                         uint32_t *file_crc, uint64_t *file_size) {
    h5_quiet();
    // HDF5 writes only the metadata: each dataset's space is allocated when it is
    // created (contiguous, never filled), and write.c then writes the tensors into it
    // itself, bypassing the page cache.
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (fapl < 0 || dcpl < 0 || H5Pset_alignment(fapl, CKPT_ALIGN_THRESHOLD, CKPT_IO_ALIGN) < 0 ||
        H5Pset_layout(dcpl, H5D_CONTIGUOUS) < 0 || H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        if (dcpl >= 0) H5Pclose(dcpl);
        return h5_fail(path, "property list");
    }
    hid_t f = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        H5Pclose(dcpl);
        return h5_fail(path, "cannot create");
    }
    hid_t lcpl = intermediate_lcpl();
    int rc = lcpl < 0 ? h5_fail(path, "property list") : 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char dpath[2 * CKPT_NAME_MAX + 64];
        piece_path(&p[i], dpath, sizeof dpath);
        hsize_t dims[2] = {(hsize_t)p[i].len[0], (hsize_t)p[i].len[1]};
        hid_t sp = H5Screate_simple(p[i].ndim, dims, NULL);
        hid_t d = sp < 0 ? -1 : H5Dcreate2(f, dpath, H5T_IEEE_F32LE, sp, lcpl, dcpl, H5P_DEFAULT);
        haddr_t addr = d < 0 ? HADDR_UNDEF : H5Dget_offset(d);
        if (addr == HADDR_UNDEF) rc = h5_fail(path, dpath);
        else p[i].addr = (int64_t)addr;
        if (d >= 0) H5Dclose(d);
        if (sp >= 0) H5Sclose(sp);
    }
    if (lcpl >= 0) H5Pclose(lcpl);
    H5Pclose(dcpl);
    if (H5Fclose(f) < 0 && rc == 0) rc = h5_fail(path, "close");
    if (rc == 0) rc = ckpt_write_data(path, p, data, n, file_crc, file_size);
    return rc;
}

static int put_attr_i64(hid_t obj, const char *name, long long v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int64_t x = v;
    int bad = a < 0 || H5Awrite(a, H5T_NATIVE_INT64, &x) < 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return bad;
}

// A fixed-length string (h5py reads it as bytes; h5dump prints it).
static hid_t string_type(size_t len) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, len > 0 ? len : 1);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    return t;
}

static int put_attr_str(hid_t obj, const char *name, const char *v) {
    hid_t t = string_type(strlen(v));
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int bad = a < 0 || H5Awrite(a, t, v) < 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return bad;
}

static int write_state(hid_t f, const ckpt_state *st, const char *config_yaml) {
    int bad = 0;
    bad |= put_attr_i64(f, "format", st->format);
    bad |= put_attr_str(f, "anvil_version", st->anvil_version);
    bad |= put_attr_i64(f, "step", st->step);
    bad |= put_attr_i64(f, "tokens", st->tokens);
    bad |= put_attr_i64(f, "samples", st->samples);
    bad |= put_attr_i64(f, "adamw_t", st->opt_t);
    bad |= put_attr_i64(f, "skipped_steps", st->skipped);
    // uint64 stored bit for bit in an int64 attribute
    long long rng;
    memcpy(&rng, &st->sample_rng, sizeof rng);
    bad |= put_attr_i64(f, "sample_rng", rng);
    bad |= put_attr_i64(f, "layout_dp", st->dp);
    bad |= put_attr_i64(f, "layout_tp", st->tp);
    bad |= put_attr_i64(f, "layout_pp", st->pp);
    bad |= put_attr_i64(f, "layout_zero", st->zero);
    size_t len = strlen(config_yaml);
    hid_t t = string_type(len);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(f, "config", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad |= d < 0 || H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, config_yaml) < 0;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    return bad;
}

static int same_tensor(const ckpt_piece *a, const ckpt_piece *b) {
    return strcmp(a->kind, b->kind) == 0 && strcmp(a->name, b->name) == 0;
}

// One virtual dataset /KIND/NAME over the pieces i with same_tensor(p[i], p[first]).
static int write_virtual(hid_t f, hid_t lcpl, const char *path, const ckpt_piece *p, int n,
                         int first) {
    const ckpt_piece *t = &p[first];
    hsize_t gdims[2] = {(hsize_t)t->gshape[0], (hsize_t)(t->ndim == 2 ? t->gshape[1] : 1)};
    hid_t gsp = H5Screate_simple(t->ndim, gdims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    float nan_fill = NAN;   // an element no piece covers reads as NaN, loudly
    int bad = gsp < 0 || dcpl < 0 || H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &nan_fill) < 0;
    for (int i = first; i < n && !bad; i++) {
        if (!same_tensor(&p[i], t)) continue;
        char src[2 * CKPT_NAME_MAX + 64];
        piece_path(&p[i], src, sizeof src);
        hsize_t start[2] = {(hsize_t)p[i].off[0], (hsize_t)p[i].off[1]};
        hsize_t count[2] = {(hsize_t)p[i].len[0], (hsize_t)p[i].len[1]};
        hid_t vsp = H5Scopy(gsp);
        hid_t ssp = H5Screate_simple(t->ndim, count, NULL);
        bad = vsp < 0 || ssp < 0 ||
              H5Sselect_hyperslab(vsp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
              H5Pset_virtual(dcpl, vsp, p[i].file, src, ssp) < 0;
        if (vsp >= 0) H5Sclose(vsp);
        if (ssp >= 0) H5Sclose(ssp);
    }
    char dpath[2 * CKPT_NAME_MAX + 8];
    snprintf(dpath, sizeof dpath, "/%s/%s", t->kind, t->name);
    hid_t d = bad ? -1 : H5Dcreate2(f, dpath, H5T_IEEE_F32LE, gsp, lcpl, dcpl, H5P_DEFAULT);
    if (d < 0) bad = 1;
    else H5Dclose(d);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (gsp >= 0) H5Sclose(gsp);
    return bad ? h5_fail(path, dpath) : 0;
}

// The piece table's compound type, in memory (the ckpt_piece struct) and in the file
// (little-endian, packed). Fields: kind, name, file (fixed strings), ndim, gshape[2],
// off[2], len[2], addr, crc32c. Returns the type, or -1.
static hid_t piece_type(int in_file) {
    hid_t i32 = in_file ? H5T_STD_I32LE : H5T_NATIVE_INT32;
    hid_t i64 = in_file ? H5T_STD_I64LE : H5T_NATIVE_INT64;
    hid_t u32 = in_file ? H5T_STD_U32LE : H5T_NATIVE_UINT32;
    hsize_t two = 2;
    hid_t kind = H5Tcopy(H5T_C_S1), name = H5Tcopy(H5T_C_S1), file = H5Tcopy(H5T_C_S1);
    hid_t pair = H5Tarray_create2(i64, 1, &two);
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(ckpt_piece));
    int bad = kind < 0 || name < 0 || file < 0 || pair < 0 || t < 0 ||
              H5Tset_size(kind, sizeof ((ckpt_piece *)0)->kind) < 0 ||
              H5Tset_size(name, sizeof ((ckpt_piece *)0)->name) < 0 ||
              H5Tset_size(file, sizeof ((ckpt_piece *)0)->file) < 0 ||
              H5Tinsert(t, "kind", HOFFSET(ckpt_piece, kind), kind) < 0 ||
              H5Tinsert(t, "name", HOFFSET(ckpt_piece, name), name) < 0 ||
              H5Tinsert(t, "file", HOFFSET(ckpt_piece, file), file) < 0 ||
              H5Tinsert(t, "ndim", HOFFSET(ckpt_piece, ndim), i32) < 0 ||
              H5Tinsert(t, "gshape", HOFFSET(ckpt_piece, gshape), pair) < 0 ||
              H5Tinsert(t, "off", HOFFSET(ckpt_piece, off), pair) < 0 ||
              H5Tinsert(t, "len", HOFFSET(ckpt_piece, len), pair) < 0 ||
              H5Tinsert(t, "addr", HOFFSET(ckpt_piece, addr), i64) < 0 ||
              H5Tinsert(t, "crc32c", HOFFSET(ckpt_piece, crc), u32) < 0 ||
              (in_file && H5Tpack(t) < 0);
    if (kind >= 0) H5Tclose(kind);
    if (name >= 0) H5Tclose(name);
    if (file >= 0) H5Tclose(file);
    if (pair >= 0) H5Tclose(pair);
    if (bad && t >= 0) H5Tclose(t);
    return bad ? -1 : t;
}

// The dataset /pieces: one row per piece, as written (h5py reads it as a structured
// array).
static int write_piece_table(hid_t f, const ckpt_piece *p, int n) {
    hsize_t dims = (hsize_t)n;
    hid_t mt = piece_type(0), ft = piece_type(1);
    hid_t sp = H5Screate_simple(1, &dims, NULL);
    hid_t d = mt < 0 || ft < 0 || sp < 0 ? -1 : H5Dcreate2(f, "pieces", ft, sp, H5P_DEFAULT,
                                                          H5P_DEFAULT, H5P_DEFAULT);
    int bad = d < 0 || (n > 0 && H5Dwrite(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, p) < 0);
    if (d >= 0) H5Dclose(d);
    if (sp >= 0) H5Sclose(sp);
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    return bad;
}

int ckpt_h5_write_index(const char *path, const ckpt_piece *p, int n, const ckpt_state *st,
                        const char *config_yaml) {
    h5_quiet();
    hid_t f = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return h5_fail(path, "cannot create");
    hid_t lcpl = intermediate_lcpl();
    int rc = lcpl < 0 ? h5_fail(path, "property list") : 0;
    if (rc == 0 && write_state(f, st, config_yaml)) rc = h5_fail(path, "writing the state");
    if (rc == 0 && write_piece_table(f, p, n)) rc = h5_fail(path, "writing /pieces");
    for (int i = 0; i < n && rc == 0; i++) {
        int seen = 0;   // the tensor's first piece creates its dataset
        for (int j = 0; j < i && !seen; j++) seen = same_tensor(&p[j], &p[i]);
        if (!seen) rc = write_virtual(f, lcpl, path, p, n, i);
    }
    if (lcpl >= 0) H5Pclose(lcpl);
    if (H5Fclose(f) < 0 && rc == 0) rc = h5_fail(path, "close");
    return rc;
}

// ---- reading --------------------------------------------------------------------------

struct ckpt_reader {
    hid_t f;
    hid_t dapl;                  // virtual datasets resolve their files in the dir
    char path[CKPT_PATH_MAX];
};

static int get_attr_i64(hid_t f, const char *name, long long *v) {
    if (H5Aexists(f, name) <= 0) return 1;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    int64_t x = 0;
    int bad = a < 0 || H5Aread(a, H5T_NATIVE_INT64, &x) < 0;
    if (a >= 0) H5Aclose(a);
    *v = x;
    return bad;
}

int ckpt_h5_open(ckpt_reader **out, const char *dir, ckpt_state *st) {
    h5_quiet();
    *out = NULL;
    ckpt_reader *r = calloc(1, sizeof *r);
    if (!r) return 1;
    snprintf(r->path, sizeof r->path, "%s/model.h5", dir);
    r->f = H5Fopen(r->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->f < 0) {
        int rc = h5_fail(r->path, "cannot open");
        free(r);
        return rc;
    }
    r->dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (r->dapl < 0 || H5Pset_virtual_prefix(r->dapl, dir) < 0) {
        int rc = h5_fail(r->path, "dataset access property list");
        ckpt_h5_close(r);
        return rc;
    }
    memset(st, 0, sizeof *st);
    long long v[12];
    const char *names[12] = {"format", "step", "tokens", "samples", "adamw_t",
                             "skipped_steps", "sample_rng", "layout_dp", "layout_tp",
                             "layout_pp", "layout_zero", NULL};
    for (int i = 0; names[i]; i++) {
        if (get_attr_i64(r->f, names[i], &v[i])) {
            fprintf(stderr, "anvil: checkpoint '%s': attribute '%s' missing or unreadable\n",
                    r->path, names[i]);
            ckpt_h5_close(r);
            return 2;
        }
    }
    if (v[0] != CKPT_FORMAT) {
        fprintf(stderr, "anvil: checkpoint '%s': format %lld, this anvil reads format %d\n",
                r->path, v[0], CKPT_FORMAT);
        ckpt_h5_close(r);
        return 2;
    }
    st->format = (int)v[0];
    st->step = (long)v[1];
    st->tokens = v[2];
    st->samples = v[3];
    st->opt_t = (long)v[4];
    st->skipped = (long)v[5];
    memcpy(&st->sample_rng, &v[6], sizeof st->sample_rng);
    st->dp = (int)v[7];
    st->tp = (int)v[8];
    st->pp = (int)v[9];
    st->zero = (int)v[10];
    *out = r;
    return 0;
}

int ckpt_h5_shape(ckpt_reader *r, const char *kind, const char *name, int *ndim,
                  int64_t gshape[2]) {
    char dpath[2 * CKPT_NAME_MAX + 8];
    snprintf(dpath, sizeof dpath, "/%s/%s", kind, name);
    *ndim = 0;
    gshape[0] = gshape[1] = 0;
    if (H5Lexists(r->f, "/", H5P_DEFAULT) <= 0) return 2;
    char group[16];
    snprintf(group, sizeof group, "/%s", kind);
    if (H5Lexists(r->f, group, H5P_DEFAULT) <= 0 || H5Lexists(r->f, dpath, H5P_DEFAULT) <= 0)
        return 2;
    hid_t d = H5Dopen2(r->f, dpath, r->dapl);
    if (d < 0) return 2;
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    if (nd < 1 || nd > 2) return 2;
    *ndim = nd;
    gshape[0] = (int64_t)dims[0];
    gshape[1] = nd == 2 ? (int64_t)dims[1] : 0;
    return 0;
}

// Whether piece q (read from a file) is well formed: known kind, 1 or 2 dimensions,
// a non-empty rectangle inside its tensor, a plain file name, a sane address.
static int piece_ok(const ckpt_piece *q) {
    if (strcmp(q->kind, "param") && strcmp(q->kind, "adam_m") && strcmp(q->kind, "adam_v"))
        return 0;
    if (!q->name[0] || !q->file[0] || strchr(q->file, '/') || q->file[0] == '.') return 0;
    if (q->ndim != 1 && q->ndim != 2) return 0;
    if (q->ndim == 1 && (q->off[1] != 0 || q->len[1] != 1)) return 0;
    for (int k = 0; k < q->ndim; k++)
        if (q->off[k] < 0 || q->len[k] <= 0 || q->gshape[k] <= 0 || q->off[k] > q->gshape[k] ||
            q->len[k] > q->gshape[k] - q->off[k])
            return 0;
    return q->addr >= 0;
}

int ckpt_h5_pieces(ckpt_reader *r, ckpt_piece **out, int *n_out) {
    *out = NULL;
    *n_out = 0;
    if (H5Lexists(r->f, "pieces", H5P_DEFAULT) <= 0) {
        fprintf(stderr, "anvil: checkpoint '%s': no /pieces table\n", r->path);
        return 2;
    }
    hid_t d = H5Dopen2(r->f, "pieces", H5P_DEFAULT);
    hid_t sp = d < 0 ? -1 : H5Dget_space(d);
    hid_t mt = piece_type(0);
    hsize_t dims = 0;
    int rc = sp < 0 || mt < 0 || H5Sget_simple_extent_ndims(sp) != 1 ||
             H5Sget_simple_extent_dims(sp, &dims, NULL) != 1 || dims > (hsize_t)INT32_MAX / 2;
    ckpt_piece *p = rc ? NULL : calloc(dims ? dims : 1, sizeof *p);
    if (!rc && !p) rc = 1;
    if (!rc && dims > 0 && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, p) < 0) rc = 1;
    for (hsize_t i = 0; !rc && i < dims; i++) {
        ckpt_piece *q = &p[i];
        q->kind[sizeof q->kind - 1] = q->name[sizeof q->name - 1] = q->file[sizeof q->file - 1] = 0;
        if (!piece_ok(q)) {
            fprintf(stderr, "anvil: checkpoint '%s': /pieces row %llu is malformed\n", r->path,
                    (unsigned long long)i);
            rc = 3;
        }
    }
    if (mt >= 0) H5Tclose(mt);
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    if (rc) {
        free(p);
        return rc == 3 ? 2 : h5_fail(r->path, "reading /pieces");
    }
    *out = p;
    *n_out = (int)dims;
    return 0;
}

char *ckpt_h5_config(ckpt_reader *r) {
    hid_t d = H5Dopen2(r->f, "config", H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t t = H5Dget_type(d);
    size_t len = t < 0 ? 0 : H5Tget_size(t);
    char *s = len ? calloc(len + 1, 1) : NULL;
    if (s && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) < 0) {
        free(s);
        s = NULL;
    }
    if (t >= 0) H5Tclose(t);
    H5Dclose(d);
    return s;
}

void ckpt_h5_close(ckpt_reader *r) {
    if (!r) return;
    if (r->dapl >= 0 && r->dapl) H5Pclose(r->dapl);
    if (r->f >= 0) H5Fclose(r->f);
    free(r);
}
