// trainer/model.c: the decoder-only transformer, forward and backward, over the op
// interface. Both families share one code path; the family decides which norm
// (LayerNorm / RMSNorm), which position scheme (learned wpe / RoPE) and which MLP
// (GELU fc-proj / SwiGLU gate-up-down) each layer uses.
//
// Layout, as in llm.c: all parameters in one allocation (params), all gradients in a
// second with the same offsets (grads), all activations in a third; the tensor table
// (model.h) gives every parameter its global name. Everything is sized in model_init
// so that forward and backward never allocate.
//
// The model is single-device code: it receives its shape (layers, heads, vocab) and
// knows nothing of ranks. A pipeline stage or a tensor-parallel shard is built by
// handing it a model_shard (model.h); the only collectives it runs are the
// tensor-parallel reductions, through the model_tp_comm hooks parallel/ supplies.
#include "trainer/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/fatal.h"
#include "trainer/rng.h"

#define MAX_TENSORS_PER_LAYER 20

// ----------------------------------------------------------------------------
// shape resolution

// Returns 0, or 2 after printing which key is wrong.
int model_config_resolve(model_config *mc) {
    // No preset and no explicit shape: a small default model that trains on a CPU in
    // minutes (the README's first command relies on it).
    if (mc->n_layer == 0) mc->n_layer = 4;
    if (mc->d_model == 0) mc->d_model = 256;
    if (mc->n_head == 0) mc->n_head = 4;
    if (mc->n_kv_head == 0) mc->n_kv_head = mc->n_head;
    if (mc->vocab_size == 0) mc->vocab_size = 257;   // byte tokenizer + end-of-text
    if (mc->max_seq_len == 0) mc->max_seq_len = 1024;
    if (mc->norm_eps == 0.0f) mc->norm_eps = 1e-5f;
    if (mc->ffn_dim == 0) {
        if (mc->family == MODEL_FAMILY_GPT2) {
            mc->ffn_dim = 4 * mc->d_model;
        } else {
            // SwiGLU keeps the MLP's parameter count of a 4x GELU MLP: 2/3 * 4C,
            // rounded up to a multiple of 64 for matmul-friendly shapes.
            int f = (8 * mc->d_model) / 3;
            mc->ffn_dim = (f + 63) / 64 * 64;
        }
    }
    if (mc->d_model % mc->n_head != 0) {
        fprintf(stderr, "anvil: model.d_model (%d) is not divisible by model.n_head (%d)\n",
                mc->d_model, mc->n_head);
        return 2;
    }
    if (mc->n_head % mc->n_kv_head != 0) {
        fprintf(stderr, "anvil: model.n_head (%d) is not divisible by model.n_kv_head (%d)\n",
                mc->n_head, mc->n_kv_head);
        return 2;
    }
    if (mc->family == MODEL_FAMILY_LLAMA && (mc->d_model / mc->n_head) % 2 != 0) {
        fprintf(stderr, "anvil: model.d_model / model.n_head = %d must be even for RoPE\n",
                mc->d_model / mc->n_head);
        return 2;
    }
    if (mc->family == MODEL_FAMILY_GPT2 && mc->n_kv_head != mc->n_head) {
        fprintf(stderr, "anvil: model.n_kv_head (%d) must equal model.n_head (%d) for the "
                "gpt2 family\n", mc->n_kv_head, mc->n_head);
        return 2;
    }
    if (mc->family == MODEL_FAMILY_GPT2 && mc->qkv_bias == 0) {
        // gpt2 always has biases; the key only concerns llama.
        mc->qkv_bias = 1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// the parameter table

typedef struct table_builder {
    model *m;
    size_t offset;
    int glue;         // 1: the next tensor follows this one at once (q, k, v stacked)
} table_builder;

// One tensor of the shard. g0, g1: the global shape (g1 = 0 for 1-D); split: -1 whole,
// 0 rows, 1 columns, divided into sh.tp equal parts of which this rank holds part
// tp_rank. repl: the same values on every tp rank (counted on tp rank 0 only).
static param_tensor *add_tensor(table_builder *tb, const char *name, int g0, int g1,
                                int split, int is_matrix, int is_embedding, float std,
                                float cst) {
    const model_shard *sh = &tb->m->sh;
    param_tensor *t = &tb->m->tensors[tb->m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = g1 > 0 ? 2 : 1;
    t->gshape[0] = g0;
    t->gshape[1] = g1 > 0 ? g1 : 0;
    t->shape[0] = t->gshape[0];
    t->shape[1] = t->gshape[1];
    t->split_dim = sh->tp > 1 ? split : -1;
    t->split_off = 0;
    if (t->split_dim >= 0) {
        t->shape[t->split_dim] /= sh->tp;
        t->split_off = sh->tp_rank * t->shape[t->split_dim];
    }
    t->counted = t->split_dim >= 0 || sh->tp_rank == 0;
    t->numel = (size_t)t->shape[0] * (size_t)(g1 > 0 ? t->shape[1] : 1);
    t->offset = tb->offset;
    // Keep every tensor 16-float aligned (64 bytes) so vector loads stay aligned, but
    // for those glued to the one before (only the stack's first is aligned).
    tb->offset += tb->glue ? t->numel : (t->numel + 15) / 16 * 16;
    t->is_matrix = is_matrix;
    t->is_embedding = is_embedding;
    t->is_vocab = 0;
    t->init_std = std;
    t->init_const = cst;
    return t;
}

static void build_table(model *m) {
    const model_shard *sh = &m->sh;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    // global shapes: the table holds global shapes, add_tensor cuts the shard
    const int C = m->C, QD = m->cfg.n_head * m->HS, KD = m->cfg.n_kv_head * m->HS;
    const int F = m->cfg.ffn_dim, Vpg = m->Vp * sh->tp;
    const float std = m->cfg.init_std;
    // GPT-2: residual output projections scaled by 1/sqrt(2L), L the global depth, so
    // the residual stream's variance does not grow with depth.
    const float std_res = std / sqrtf(2.0f * (float)m->cfg.n_layer);
    const int bias_qkv = gpt2 || m->cfg.qkv_bias;
    const int tied = m->cfg.tie_embeddings;
    table_builder tb = {m, 0, 0};
    char n[MODEL_MAX_NAME];
    param_tensor *t;

    // wte: the embedding on the first stage; with tied embeddings also the head on the
    // last, where a second stage holds a copy that the first stage's counts for.
    if (sh->first || (sh->last && tied)) {
        t = add_tensor(&tb, "wte", Vpg, C, 0, 0, 1, std, 0);
        t->is_vocab = 1;
        if (!sh->first) t->counted = 0;
    }
    if (gpt2 && sh->first) add_tensor(&tb, "wpe", m->maxT, C, -1, 0, 1, std, 0);
    for (int l = sh->layer0; l < sh->layer0 + sh->n_layer; l++) {
        m->layer_off[l - sh->layer0] = tb.offset;
#define NAME(s) (snprintf(n, sizeof n, "layers.%d.%s", l, s), n)
        add_tensor(&tb, NAME("norm_1.weight"), C, 0, -1, 0, 0, 0, 1);
        if (gpt2) add_tensor(&tb, NAME("norm_1.bias"), C, 0, -1, 0, 0, 0, 0);
        // q, k, v stacked: one matrix (and one bias) for one projection matmul
        tb.glue = 1;
        add_tensor(&tb, NAME("attn.wq.weight"), QD, C, 0, 1, 0, std, 0);
        add_tensor(&tb, NAME("attn.wk.weight"), KD, C, 0, 1, 0, std, 0);
        tb.glue = 0;
        add_tensor(&tb, NAME("attn.wv.weight"), KD, C, 0, 1, 0, std, 0);
        if (bias_qkv) {
            tb.glue = 1;
            add_tensor(&tb, NAME("attn.wq.bias"), QD, 0, 0, 0, 0, 0, 0);
            add_tensor(&tb, NAME("attn.wk.bias"), KD, 0, 0, 0, 0, 0, 0);
            tb.glue = 0;
            add_tensor(&tb, NAME("attn.wv.bias"), KD, 0, 0, 0, 0, 0, 0);
        }
        add_tensor(&tb, NAME("attn.wo.weight"), C, QD, 1, 1, 0, std_res, 0);
        if (gpt2) add_tensor(&tb, NAME("attn.wo.bias"), C, 0, -1, 0, 0, 0, 0);
        add_tensor(&tb, NAME("norm_2.weight"), C, 0, -1, 0, 0, 0, 1);
        if (gpt2) add_tensor(&tb, NAME("norm_2.bias"), C, 0, -1, 0, 0, 0, 0);
        if (gpt2) {
            add_tensor(&tb, NAME("mlp.fc.weight"), F, C, 0, 1, 0, std, 0);
            add_tensor(&tb, NAME("mlp.fc.bias"), F, 0, 0, 0, 0, 0, 0);
            add_tensor(&tb, NAME("mlp.proj.weight"), C, F, 1, 1, 0, std_res, 0);
            add_tensor(&tb, NAME("mlp.proj.bias"), C, 0, -1, 0, 0, 0, 0);
        } else {
            tb.glue = 1;   // gate and up stacked: one matmul makes SwiGLU's gu
            add_tensor(&tb, NAME("mlp.gate.weight"), F, C, 0, 1, 0, std, 0);
            tb.glue = 0;
            add_tensor(&tb, NAME("mlp.up.weight"), F, C, 0, 1, 0, std, 0);
            add_tensor(&tb, NAME("mlp.down.weight"), C, F, 1, 1, 0, std_res, 0);
        }
#undef NAME
    }
    m->layer_off[sh->n_layer] = tb.offset;
    if (sh->last) {
        add_tensor(&tb, "norm_f.weight", C, 0, -1, 0, 0, 0, 1);
        if (gpt2) add_tensor(&tb, "norm_f.bias", C, 0, -1, 0, 0, 0, 0);
        if (!tied) {
            t = add_tensor(&tb, "lm_head.weight", Vpg, C, 0, 0, 1, std, 0);
            t->is_vocab = 1;
        }
    }
    m->n_params = tb.offset;
}

// View of tensor `name` in buffer `base` of `es`-byte elements, or NULL if the model
// has no such tensor.
static void *view(const model *m, void *base, size_t es, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return (char *)base + m->tensors[i].offset * es;
    return NULL;
}

anv_act *model_param_ptr(const model *m, const param_tensor *t) {
    return (char *)m->params + t->offset * m->be->act_bytes;
}

float *model_grad_ptr(const model *m, const param_tensor *t) {
    return m->grads + t->offset;
}

static void bind_views(model *m, model_views *v, void *base, size_t es) {
    char n[MODEL_MAX_NAME];
    v->wte = view(m, base, es, "wte");
    v->wpe = view(m, base, es, "wpe");
    for (int i = 0; i < m->L; i++) {
        const int l = m->sh.layer0 + i;   // global index in the names
        layer_params *lp = &v->layers[i];
#define V(s) (snprintf(n, sizeof n, "layers.%d.%s", l, s), view(m, base, es, n))
        lp->norm1_w = V("norm_1.weight");
        lp->norm1_b = V("norm_1.bias");
        lp->wq = V("attn.wq.weight");
        lp->bq = V("attn.wq.bias");
        lp->wk = V("attn.wk.weight");
        lp->bk = V("attn.wk.bias");
        lp->wv = V("attn.wv.weight");
        lp->bv = V("attn.wv.bias");
        lp->wo = V("attn.wo.weight");
        lp->bo = V("attn.wo.bias");
        lp->norm2_w = V("norm_2.weight");
        lp->norm2_b = V("norm_2.bias");
        if (m->cfg.family == MODEL_FAMILY_GPT2) {
            lp->w_fc = V("mlp.fc.weight");
            lp->b_fc = V("mlp.fc.bias");
            lp->w_up = NULL;
            lp->w_proj = V("mlp.proj.weight");
            lp->b_proj = V("mlp.proj.bias");
        } else {
            lp->w_fc = V("mlp.gate.weight");
            lp->b_fc = NULL;
            lp->w_up = V("mlp.up.weight");
            lp->w_proj = V("mlp.down.weight");
            lp->b_proj = NULL;
        }
#undef V
    }
    v->normf_w = view(m, base, es, "norm_f.weight");
    v->normf_b = view(m, base, es, "norm_f.bias");
    v->lm_head = m->cfg.tie_embeddings ? v->wte : view(m, base, es, "lm_head.weight");
    if (!m->sh.last) v->lm_head = NULL;
}

// ----------------------------------------------------------------------------
// allocation

// Carves consecutive 256-byte aligned pieces out of one activation allocation (256:
// what cuBLASLt and 16-byte vector loads like best, and a multiple of a cache line).
typedef struct carver {
    char *base;       // NULL during the sizing pass
    size_t used;      // bytes
    size_t act;       // bytes of an anv_act element
} carver;

#define CARVE_ALIGN 256

static void *carve_bytes(carver *c, size_t bytes) {
    void *p = c->base ? c->base + c->used : NULL;
    c->used += (bytes + CARVE_ALIGN - 1) / CARVE_ALIGN * CARVE_ALIGN;
    return p;
}
// n fp32 elements / n anv_act elements
static float *carve(carver *c, size_t n) { return carve_bytes(c, n * sizeof(float)); }
static anv_act *carve_a(carver *c, size_t n) { return carve_bytes(c, n * c->act); }

// One layer's activations other than its input res_in. With shared_sel, norm1, norm2
// and act are m->rc's (selective recompute rebuilds them in backward).
static void carve_layer(model *m, layer_acts *a, carver *c, int shared_sel) {
    const size_t B = (size_t)m->B, T = (size_t)m->T, N = B * T;
    const size_t C = (size_t)m->C, QD = (size_t)m->NH * m->HS, KD = (size_t)m->KVH * m->HS;
    const size_t F = (size_t)m->F;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    if (shared_sel) {
        a->norm1 = m->rc.norm1;
        a->norm2 = m->rc.norm2;
        a->act = m->rc.act;
    } else {
        a->norm1 = carve_a(c, N * C);
        a->norm2 = carve_a(c, N * C);
        a->act = carve_a(c, N * F);
    }
    a->n1_mean = gpt2 ? carve(c, N) : NULL;
    a->n1_rstd = carve(c, N);
    a->qkv = carve_a(c, N * (QD + 2 * KD));
    a->att_state = carve(c, m->be->attention_state_floats(m->B, m->T, m->NH, m->KVH, m->HS,
                                                          !gpt2));
    a->att_out = carve_a(c, N * QD);
    a->res_mid = carve_a(c, N * C);
    a->n2_mean = gpt2 ? carve(c, N) : NULL;
    a->n2_rstd = carve(c, N);
    a->fc = carve_a(c, N * F * (gpt2 ? 1 : 2));
}

// What one micro-batch's forward keeps for its backward: each layer's input, and what
// train.recompute does not recompute (the rest points into m->rc, shared by every
// layer and slot: the backward rebuilds it there before use).
static void carve_slot(model *m, model_slot *sl, carver *c) {
    const size_t B = (size_t)m->B, T = (size_t)m->T, N = B * T;
    const size_t C = (size_t)m->C;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    for (int l = 0; l < m->L; l++) {
        layer_acts *a = &sl->acts[l];
        anv_act *res_in = carve_a(c, N * C);
        if (m->sh.recompute == RECOMPUTE_MODE_FULL)
            *a = m->rc;
        else
            carve_layer(m, a, c, m->sh.recompute == RECOMPUTE_MODE_SELECTIVE);
        a->res_in = res_in;
    }
    sl->res_out = carve_a(c, N * C);
    sl->inputs = (int32_t *)carve(c, N);   // int32 and float are both 4 bytes
    if (m->sh.last) {
        sl->normf = carve_a(c, N * C);
        sl->nf_mean = gpt2 ? carve(c, N) : NULL;
        sl->nf_rstd = carve(c, N);
        sl->logits = carve_a(c, N * (size_t)m->Vp);
        sl->losses = carve(c, N);
        sl->lse = carve(c, N);
        sl->stats = carve(c, N * 3);
        sl->targets = (int32_t *)carve(c, N);
    }
}

static void carve_acts(model *m, carver *c) {
    const size_t B = (size_t)m->B, T = (size_t)m->T, N = B * T;
    const size_t C = (size_t)m->C, QD = (size_t)m->NH * m->HS, KD = (size_t)m->KVH * m->HS;
    const size_t F = (size_t)m->F;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    // first what lives across steps (the RoPE tables, filled once at init), then from
    // step_off on what every step writes before reading (model_step_scratch)
    m->rope_cos = gpt2 ? NULL : carve(c, (size_t)m->maxT * (m->HS / 2));
    m->rope_sin = gpt2 ? NULL : carve(c, (size_t)m->maxT * (m->HS / 2));
    m->step_off = c->used;
    // the activations train.recompute rebuilds, one set shared by every layer and slot
    memset(&m->rc, 0, sizeof m->rc);
    if (m->sh.recompute == RECOMPUTE_MODE_FULL && m->L > 0) {
        carve_layer(m, &m->rc, c, 0);
    } else if (m->sh.recompute == RECOMPUTE_MODE_SELECTIVE && m->L > 0) {
        m->rc.norm1 = carve_a(c, N * C);
        m->rc.norm2 = carve_a(c, N * C);
        m->rc.act = carve_a(c, N * F);
    }
    for (int s = 0; s < m->n_slots; s++) carve_slot(m, &m->slots[s], c);
    m->stats_all = m->sh.last && m->sh.tp > 1 ? carve(c, (size_t)m->sh.tp * N * 3) : NULL;
    m->d_res = carve_a(c, N * C);
    m->d_tmp = carve_a(c, N * C);
    m->d_norm = carve_a(c, N * C);
    m->d_qkv = carve_a(c, N * (QD + 2 * KD));
    m->d_att = carve_a(c, N * QD);
    m->att_scratch = carve(c, m->be->attention_scratch_floats(m->B, m->T, m->NH, m->KVH,
                                                              m->HS, !gpt2));
    m->d_fc = carve_a(c, N * F * (gpt2 ? 1 : 2));
    m->d_act = carve_a(c, N * F);
}

// model_init's work; with allocate 0 it stops once every size is known (host tables
// only), for model_memory.
static int model_setup(model *m, const model_config *mc, const anv_backend *be, int B, int T,
                       const model_shard *sh, int allocate) {
    memset(m, 0, sizeof *m);
    m->cfg = *mc;
    m->be = be;
    if (sh) {
        m->sh = *sh;
    } else {
        model_shard whole = {1, 0, 0, mc->n_layer, 1, 1, 1, 1, RECOMPUTE_MODE_NONE};
        m->sh = whole;
    }
    if (m->sh.n_slots < 1) m->sh.n_slots = 1;
    if (m->sh.n_shards < 1) m->sh.n_shards = 1;
    const int tp = m->sh.tp;
    m->L = m->sh.n_layer;
    m->C = mc->d_model;
    m->NH = mc->n_head / tp;
    m->KVH = mc->n_kv_head / tp;
    m->HS = mc->d_model / mc->n_head;
    m->F = mc->ffn_dim / tp;
    m->V = mc->vocab_size;
    // Vocabulary rows: padded to a multiple of tp (the padded logits get no probability
    // mass and no gradient, and export cuts them), then split.
    m->Vp = (mc->vocab_size + tp - 1) / tp;
    const int vm = be->vocab_multiple > 1 ? be->vocab_multiple : 1;   // e.g. 50257 -> 50304
    m->Vp = (m->Vp + vm - 1) / vm * vm;
    m->v0 = m->sh.tp_rank * m->Vp;
    m->Vv = m->V - m->v0 < 0 ? 0 : (m->V - m->v0 > m->Vp ? m->Vp : m->V - m->v0);
    m->maxT = mc->max_seq_len;
    m->B = B;
    m->T = T;
    m->eps = mc->norm_eps;
    m->n_slots = m->sh.n_slots;
    if (T > m->maxT) {
        fprintf(stderr, "anvil: train.seq_len (%d) exceeds model.max_seq_len (%d)\n", T,
                m->maxT);
        return 2;
    }

    m->tensors = calloc((size_t)m->L * MAX_TENSORS_PER_LAYER + 8, sizeof *m->tensors);
    m->p.layers = calloc((size_t)m->L + 1, sizeof(layer_params));
    m->g.layers = calloc((size_t)m->L + 1, sizeof(layer_params));
    m->slots = calloc((size_t)m->n_slots, sizeof(model_slot));
    m->layer_off = calloc((size_t)m->L + 1, sizeof(size_t));
    if (!m->tensors || !m->p.layers || !m->g.layers || !m->slots || !m->layer_off) goto oom;
    for (int s = 0; s < m->n_slots; s++) {
        m->slots[s].acts = calloc((size_t)m->L + 1, sizeof(layer_acts));
        m->slots[s].losses_host = calloc((size_t)B * T, sizeof(float));
        if (!m->slots[s].acts || !m->slots[s].losses_host) goto oom;
    }
    build_table(m);

    size_t shards = (size_t)m->sh.n_shards;
    m->n_alloc = (m->n_params + shards - 1) / shards * shards;
    if (m->n_alloc == 0) m->n_alloc = shards;
    if (!allocate) {
        carver c = {NULL, 0, be->act_bytes};
        carve_acts(m, &c);
        m->act_block_bytes = c.used;
        return 0;
    }
    m->params = be->alloc(m->n_alloc * be->act_bytes);
    m->grads = be->alloc(m->n_alloc * sizeof(float));
    if (!m->params || !m->grads) goto oom;
    bind_views(m, &m->p, m->params, be->act_bytes);
    bind_views(m, &m->g, m->grads, sizeof(float));

    carver c = {NULL, 0, be->act_bytes};
    carve_acts(m, &c);                // sizing pass
    m->act_block = be->alloc(c.used);
    if (!m->act_block) goto oom;
    m->act_block_bytes = c.used;
    c.base = m->act_block;
    c.used = 0;
    carve_acts(m, &c);
    m->logits = m->slots[0].logits;

    if (m->cfg.family == MODEL_FAMILY_LLAMA) {
        size_t n = (size_t)m->maxT * (m->HS / 2);
        float *cs = malloc(2 * n * sizeof(float));
        if (!cs) goto oom;
        rope_params rp = {mc->rope_theta, mc->rope_scaling == ROPE_SCALING_LLAMA3,
                          mc->rope_factor, mc->rope_low_freq_factor,
                          mc->rope_high_freq_factor, mc->rope_original_max_pos};
        rope_tables_fill(cs, cs + n, m->maxT, m->HS, &rp);
        be->copy_from_host(m->rope_cos, cs, n * sizeof(float));
        be->copy_from_host(m->rope_sin, cs + n, n * sizeof(float));
        free(cs);
    }
    return 0;
oom:
    fprintf(stderr, "anvil: out of memory allocating the model (%zu parameters, B=%d, T=%d)\n",
            m->n_params, B, T);
    model_free(m);
    return 1;
}

int model_init(model *m, const model_config *mc, const anv_backend *be, int B, int T,
               const model_shard *sh) {
    return model_setup(m, mc, be, B, T, sh, 1);
}

int model_memory(const model_config *mc, const anv_backend *be, int B, int T,
                 const model_shard *sh, size_t *n_alloc, size_t *act_bytes) {
    model tmp;
    int rc = model_setup(&tmp, mc, be, B, T, sh, 0);
    *n_alloc = tmp.n_alloc;
    *act_bytes = tmp.act_block_bytes;
    tmp.be = NULL;                    // nothing was allocated on the backend
    model_free(&tmp);
    return rc;
}

void model_free(model *m) {
    if (m->be) {
        m->be->free(m->params);
        m->be->free(m->grads);
        m->be->free(m->act_block);
    }
    for (int s = 0; m->slots && s < m->n_slots; s++) {
        free(m->slots[s].acts);
        free(m->slots[s].losses_host);
    }
    free(m->slots);
    free(m->layer_off);
    free(m->tensors);
    free(m->p.layers);
    free(m->g.layers);
    memset(m, 0, sizeof *m);
}

int model_init_weights(model *m, unsigned long long seed) {
    size_t max_numel = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        size_t g = (size_t)t->gshape[0] * (size_t)(t->ndim == 2 ? t->gshape[1] : 1);
        if (g > max_numel) max_numel = g;
    }
    float *full = malloc(max_numel * sizeof(float));
    float *part = malloc(max_numel * sizeof(float));
    if (!full || !part) {
        free(full);
        free(part);
        fprintf(stderr, "anvil: out of memory initializing weights\n");
        return 1;
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        if (t->init_std <= 0) {
            for (size_t j = 0; j < t->numel; j++) part[j] = t->init_const;
        } else {
            // draw the global tensor (row-major), keep this shard's rows or columns
            const size_t g0 = (size_t)t->gshape[0], g1 = t->ndim == 2 ? (size_t)t->gshape[1] : 1;
            uint64_t s = rng_stream(seed, t->name);
            for (size_t j = 0; j < g0 * g1; j++) full[j] = (float)(t->init_std * rng_normal(&s));
            if (t->split_dim == 1) {
                const size_t c1 = (size_t)t->shape[1];
                for (size_t r = 0; r < g0; r++)
                    memcpy(part + r * c1, full + r * g1 + t->split_off, c1 * sizeof(float));
            } else {
                const size_t first = t->split_dim == 0 ? (size_t)t->split_off * g1 : 0;
                memcpy(part, full + first, t->numel * sizeof(float));
            }
        }
        m->be->act_from_host_f32(model_param_ptr(m, t), part, t->numel);
    }
    free(full);
    free(part);
    return 0;
}

// ----------------------------------------------------------------------------
// forward

static void norm_forward(const model *m, anv_act *out, float *mean, float *rstd,
                         const anv_act *inp, const anv_act *w, const anv_act *b, int N) {
    if (m->cfg.family == MODEL_FAMILY_GPT2)
        m->be->layernorm_forward(out, mean, rstd, inp, w, b, N, m->C, m->eps);
    else
        m->be->rmsnorm_forward(out, rstd, inp, w, N, m->C, m->eps);
}

// res = a + b, then out = norm(res): one fused op (the residual add of one block and
// the norm that opens the next).
static void norm_residual_forward(const model *m, anv_act *res, anv_act *out, float *mean,
                                  float *rstd, const anv_act *a, const anv_act *b,
                                  const anv_act *w, const anv_act *bias, int N) {
    if (m->cfg.family == MODEL_FAMILY_GPT2)
        m->be->layernorm_residual_forward(res, out, mean, rstd, a, b, w, bias, N, m->C, m->eps);
    else
        m->be->rmsnorm_residual_forward(res, out, rstd, a, b, w, N, m->C, m->eps);
}

static void norm_backward(const model *m, anv_act *dinp, float *dw, float *db,
                          const anv_act *dout, const anv_act *inp, const anv_act *w,
                          const float *mean, const float *rstd, int N) {
    if (m->cfg.family == MODEL_FAMILY_GPT2)
        m->be->layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, m->C);
    else
        m->be->rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, m->C);
}

// Sum buf (n) over the tensor-parallel group: the output of a row-parallel layer
// (forward) or the input gradient of a column-parallel one (backward).
static void tp_sum(const model *m, anv_act *buf, size_t n) {
    if (m->sh.tp > 1) m->tp_comm->all_reduce(m->tp_comm->ctx, buf, n);
}

// A row-parallel matmul: each shard multiplies its input columns; the sum over tp is
// the layer's output. Its bias is added once, by tp rank 0, before the sum.
static void row_parallel_forward(const model *m, anv_act *out, const anv_act *inp,
                                 const anv_act *w, const anv_act *b, int N, int C, int OC) {
    m->be->matmul_forward(out, NULL, inp, w, m->sh.tp_rank == 0 ? b : NULL, N, C, OC);
    tp_sum(m, out, (size_t)N * OC);
}

// Layer w's forward from a->res_in up to the MLP's activation a->act (the residual add
// that closes the block is the caller's). With norm1, norm_1 runs here; otherwise its
// output is already in a->norm1 (fused with the previous block's residual add). The
// backward of train.recompute=full runs it again to rebuild the layer's activations.
static void layer_forward_to_act(const model *m, const layer_params *w, layer_acts *a, int B,
                                 int T, int norm1) {
    const anv_backend *be = m->be;
    const int N = B * T, C = m->C, QD = m->NH * m->HS, KD = m->KVH * m->HS, F = m->F;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    if (norm1)
        norm_forward(m, a->norm1, a->n1_mean, a->n1_rstd, a->res_in, w->norm1_w, w->norm1_b, N);

    // attention block: res_mid = res_in + wo(attention(norm_1(res_in)))
    // q, k, v in one matmul by the stacked weights: (B,T,NH+2KVH,HS)
    be->matmul_forward(a->qkv, NULL, a->norm1, w->wq, w->bq, N, C, QD + 2 * KD);
    // llama: RoPE inside the attention (rope_cos is NULL for gpt2)
    be->attention_forward(a->att_out, a->att_state, a->qkv, m->rope_cos, m->rope_sin, B, T,
                          m->NH, m->KVH, m->HS);
    row_parallel_forward(m, a->res_mid, a->att_out, w->wo, w->bo, N, QD, C);
    norm_residual_forward(m, a->res_mid, a->norm2, a->n2_mean, a->n2_rstd, a->res_mid,
                          a->res_in, w->norm2_w, w->norm2_b, N);

    // MLP block up to its activation: act = gelu(fc(norm_2)) or silu(gate) * up
    if (gpt2) {
        // fc through the GELU epilogue: fc keeps the pre-GELU values for backward
        be->matmul_forward(a->act, a->fc, a->norm2, w->w_fc, w->b_fc, N, C, F);  // (B,T,F)
    } else {
        // gate and up in one matmul by the stacked weights: fc = gu (B,T,2F)
        be->matmul_forward(a->fc, NULL, a->norm2, w->w_fc, NULL, N, C, 2 * F);
        be->swiglu_forward(a->act, a->fc, N, F);
    }
}

anv_act *model_slot_input(model *m, int slot) {
    return m->L > 0 ? m->slots[slot].acts[0].res_in : m->slots[slot].res_out;
}
anv_act *model_slot_output(model *m, int slot) { return m->slots[slot].res_out; }
anv_act *model_input_grad(model *m) { return m->d_res; }

double model_forward_slot(model *m, int slot, const int32_t *inputs,
                          const int32_t *targets, int B, int T, float dloss) {
    const anv_backend *be = m->be;
    const int N = B * T, C = m->C, F = m->F;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    model_slot *sl = &m->slots[slot];
    m->cur_slot = slot;
    sl->curB = B;
    sl->curT = T;
    sl->have_targets = targets != NULL;
    sl->ce_dloss = 0.0f;
    anv_act *x = model_slot_input(m, slot);   // (B,T,C)

    if (m->sh.first) {
        // vocab-parallel embedding: each shard looks up the tokens it holds (zero rows
        // for the others) and the sum over tp is the embedding; wpe is added once
        be->copy_from_host(sl->inputs, inputs, (size_t)N * sizeof(int32_t));
        be->encoder_forward(x, sl->inputs, m->p.wte,
                            gpt2 && m->sh.tp_rank == 0 ? m->p.wpe : NULL, B, T, C, m->v0,
                            m->Vp);
        tp_sum(m, x, (size_t)N * C);
    }

    // Each block's closing residual add is fused with the norm that follows it (the
    // next layer's norm_1, or the final norm); only the stage's first norm_1 and, on a
    // stage without the head, its last residual add stand alone.
    for (int l = 0; l < m->L; l++) {
        const layer_params *w = &m->p.layers[l];
        layer_acts *a = &sl->acts[l];
        anv_act *res_next = l + 1 < m->L ? sl->acts[l + 1].res_in : sl->res_out;   // (B,T,C)

        // res_next = res_mid + mlp(norm_2(res_mid)), res_mid = res_in + attention(...)
        layer_forward_to_act(m, w, a, B, T, l == 0);
        row_parallel_forward(m, res_next, a->act, w->w_proj, w->b_proj, N, F, C);
        if (l + 1 < m->L) {
            const layer_params *wn = &m->p.layers[l + 1];
            layer_acts *an = &sl->acts[l + 1];
            norm_residual_forward(m, res_next, an->norm1, an->n1_mean, an->n1_rstd, res_next,
                                  a->res_mid, wn->norm1_w, wn->norm1_b, N);
        } else if (m->sh.last) {
            norm_residual_forward(m, res_next, sl->normf, sl->nf_mean, sl->nf_rstd, res_next,
                                  a->res_mid, m->p.normf_w, m->p.normf_b, N);
        } else {
            be->residual_forward(res_next, res_next, a->res_mid, (size_t)N * C);
        }
    }
    if (!m->sh.last) return 0.0;

    if (m->L == 0)
        norm_forward(m, sl->normf, sl->nf_mean, sl->nf_rstd, sl->res_out, m->p.normf_w,
                     m->p.normf_b, N);
    // vocab-parallel head: this shard's logits only; the full (B,T,V) never exists
    be->matmul_forward(sl->logits, NULL, sl->normf, m->p.lm_head, NULL, N, C, m->Vp);  // (B,T,Vp)
    if (!targets) return 0.0;

    be->copy_from_host(sl->targets, targets, (size_t)N * sizeof(int32_t));
    if (dloss != 0.0f && m->sh.tp == 1) {
        // training, whole vocabulary here: losses and dlogits (in place) in one pass
        be->crossentropy_fused(sl->logits, sl->losses, sl->logits, sl->targets, N, m->Vv,
                               m->Vp, dloss);
        sl->ce_dloss = dloss;
    } else {
        be->crossentropy_stats(sl->stats, sl->logits, sl->targets, N, m->v0, m->Vv, m->Vp);
        const float *stats = sl->stats;
        if (m->sh.tp > 1) {
            m->tp_comm->all_gather(m->tp_comm->ctx, sl->stats, m->stats_all, (size_t)N * 3);
            stats = m->stats_all;
        }
        be->crossentropy_combine(sl->losses, sl->lse, stats, sl->targets, N, m->sh.tp);
    }
    be->copy_to_host(sl->losses_host, sl->losses, (size_t)N * sizeof(float));
    double sum = 0.0;
    for (int i = 0; i < N; i++)
        if (targets[i] >= 0) sum += sl->losses_host[i];
    return sum;
}

double model_forward(model *m, const int32_t *inputs, const int32_t *targets, int B, int T) {
    return model_forward_slot(m, 0, inputs, targets, B, T, 0.0f);
}

// ----------------------------------------------------------------------------
// backward: the forward pass in reverse

void model_backward_slot(model *m, int slot, float dloss) {
    const anv_backend *be = m->be;
    model_slot *sl = &m->slots[slot];
    const int B = sl->curB, T = sl->curT, N = B * T;
    const int C = m->C, QD = m->NH * m->HS, KD = m->KVH * m->HS, F = m->F;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    const size_t NC = (size_t)N * C, ab = be->act_bytes;

    // d_res: gradient of the residual stream, carried down through the layers. Each
    // residual add passes it through unchanged, so the branches' input gradients are
    // accumulated straight into it (norm backward accumulates into dinp): the residual
    // backward is fused into every norm backward. Stages other than the last receive
    // it from the next stage.
    if (m->sh.last) {
        // logits -> dlogits in place (unless the forward did it), then into the final
        // norm's output
        if (sl->ce_dloss == 0.0f)
            be->crossentropy_backward(sl->logits, sl->logits, sl->lse, sl->targets, N, m->v0,
                                      m->Vv, m->Vp, dloss);
        else if (sl->ce_dloss != dloss)   // the caller broke model.h's contract
            anv_fatal(__FILE__, __LINE__, "model_backward_slot",
                      "dloss differs from the one its forward was given");
        sl->ce_dloss = 0.0f;
        be->matmul_backward(m->d_norm, ANV_GRAD_MODE_SET, m->g.lm_head, NULL, sl->logits,
                            sl->normf, m->p.lm_head, NULL, N, C, m->Vp);
        tp_sum(m, m->d_norm, NC);
        be->zero(m->d_res, NC * ab);
        norm_backward(m, m->d_res, m->g.normf_w, m->g.normf_b, m->d_norm, sl->res_out,
                      m->p.normf_w, sl->nf_mean, sl->nf_rstd, N);
    }

    for (int l = m->L - 1; l >= 0; l--) {
        const layer_params *w = &m->p.layers[l];
        const layer_params *g = &m->g.layers[l];
        layer_acts *a = &sl->acts[l];

        // train.recompute: rebuild what the forward did not keep, from what it did
        if (m->sh.recompute == RECOMPUTE_MODE_FULL) {
            layer_forward_to_act(m, w, a, B, T, 1);
        } else if (m->sh.recompute == RECOMPUTE_MODE_SELECTIVE) {
            norm_forward(m, a->norm1, a->n1_mean, a->n1_rstd, a->res_in, w->norm1_w,
                         w->norm1_b, N);
            norm_forward(m, a->norm2, a->n2_mean, a->n2_rstd, a->res_mid, w->norm2_w,
                         w->norm2_b, N);
            if (gpt2)
                be->gelu_forward(a->act, a->fc, (size_t)N * F);
            else
                be->swiglu_forward(a->act, a->fc, N, F);
        }

        // MLP block (proj/down is row-parallel: its input gradient is local, its bias
        // gradient is the full one on every rank). The first write to each activation
        // gradient overwrites it (SET), so none is zeroed first.
        if (gpt2) {
            // the dGELU epilogue: d_fc is overwritten with the pre-GELU gradient
            be->matmul_backward(m->d_fc, ANV_GRAD_MODE_SET, g->w_proj, g->b_proj, m->d_res,
                                a->act, w->w_proj, a->fc, N, F, C);
        } else {
            be->matmul_backward(m->d_act, ANV_GRAD_MODE_SET, g->w_proj, g->b_proj, m->d_res,
                                a->act, w->w_proj, NULL, N, F, C);
            be->swiglu_backward(m->d_fc, m->d_act, a->fc, N, F);   // d_fc = dgu (B,T,2F)
        }
        be->matmul_backward(m->d_norm, ANV_GRAD_MODE_SET, g->w_fc, g->b_fc, m->d_fc, a->norm2,
                            w->w_fc, NULL, N, C, gpt2 ? F : 2 * F);
        tp_sum(m, m->d_norm, NC);   // fc (gate, up) are column-parallel
        norm_backward(m, m->d_res, g->norm2_w, g->norm2_b, m->d_norm, a->res_mid, w->norm2_w,
                      a->n2_mean, a->n2_rstd, N);

        // attention block
        be->matmul_backward(m->d_att, ANV_GRAD_MODE_SET, g->wo, g->bo, m->d_res, a->att_out,
                            w->wo, NULL, N, QD, C);
        be->attention_backward(m->d_qkv, m->att_scratch, m->d_att, a->att_out, a->att_state,
                               a->qkv, m->rope_cos, m->rope_sin, B, T, m->NH, m->KVH, m->HS);
        be->matmul_backward(m->d_norm, ANV_GRAD_MODE_SET, g->wq, g->bq, m->d_qkv, a->norm1,
                            w->wq, NULL, N, C, QD + 2 * KD);
        tp_sum(m, m->d_norm, NC);   // q, k, v are column-parallel
        norm_backward(m, m->d_res, g->norm1_w, g->norm1_b, m->d_norm, a->res_in, w->norm1_w,
                      a->n1_mean, a->n1_rstd, N);
        if (m->grad_hook)
            m->grad_hook->ready(m->grad_hook->ctx, m->layer_off[l],
                                m->layer_off[l + 1] - m->layer_off[l]);
    }
    if (m->sh.first)
        be->encoder_backward(m->g.wte, gpt2 ? m->g.wpe : NULL, m->d_res, sl->inputs, B, T, C,
                             m->v0, m->Vp);
}

void model_backward(model *m, float dloss) { model_backward_slot(m, m->cur_slot, dloss); }

void model_step_scratch(const model *m, void **p, size_t *bytes) {
    *p = (char *)m->act_block + m->step_off;
    *bytes = m->act_block_bytes - m->step_off;
}

void model_zero_grad(model *m) { m->be->zero(m->grads, m->n_alloc * sizeof(float)); }

// ----------------------------------------------------------------------------
// counts

// Elements of t that count on this rank: vocabulary tensors without their padding rows.
static size_t counted_numel(const model *m, const param_tensor *t) {
    if (!t->counted) return 0;
    if (!t->is_vocab) return t->numel;
    return (size_t)m->Vv * (size_t)t->shape[1];
}

size_t model_num_params(const model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_tensors; i++) n += counted_numel(m, &m->tensors[i]);
    return n;
}

// 6 FLOPs per parameter per token (2 forward, 4 backward) for every matmul weight,
// the LM head included (tied or not); plus attention scores and values:
// 2 matmuls of T x HS per query head at 2 FLOPs per MAC, x3 for backward, halved by
// the causal mask -> 6 * L * NH * HS * T per token. Each rank counts its shard.
double model_flops_per_token(const model *m, int T) {
    double n = 0.0;
    for (int i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].is_embedding) n += (double)counted_numel(m, &m->tensors[i]);
    if (m->sh.last) n += (double)m->Vv * m->C;   // the head, one shard per tp rank
    return 6.0 * n + 6.0 * m->L * (double)m->NH * m->HS * T;
}
