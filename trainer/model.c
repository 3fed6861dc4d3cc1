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
// knows nothing of ranks. The distributed issue builds a stage's or a tensor-parallel
// shard's model by handing it the local shape.
#include "trainer/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
} table_builder;

static void add_tensor(table_builder *tb, const char *name, int d0, int d1, int is_matrix,
                       int is_embedding, float std, float cst) {
    param_tensor *t = &tb->m->tensors[tb->m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    t->offset = tb->offset;
    // Keep every tensor 16-float aligned (64 bytes) so vector loads stay aligned.
    tb->offset += (t->numel + 15) / 16 * 16;
    t->is_matrix = is_matrix;
    t->is_embedding = is_embedding;
    t->init_std = std;
    t->init_const = cst;
}

static void build_table(model *m) {
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    const int C = m->C, QD = m->NH * m->HS, KD = m->KVH * m->HS, F = m->F;
    const float std = m->cfg.init_std;
    // GPT-2: residual output projections scaled by 1/sqrt(2L) so the residual stream's
    // variance does not grow with depth.
    const float std_res = std / sqrtf(2.0f * (float)m->L);
    const int bias_qkv = gpt2 || m->cfg.qkv_bias;
    table_builder tb = {m, 0};
    char n[MODEL_MAX_NAME];

    add_tensor(&tb, "wte", m->Vp, C, 0, 1, std, 0);
    if (gpt2) add_tensor(&tb, "wpe", m->maxT, C, 0, 1, std, 0);
    for (int l = 0; l < m->L; l++) {
#define NAME(s) (snprintf(n, sizeof n, "layers.%d.%s", l, s), n)
        add_tensor(&tb, NAME("norm_1.weight"), C, 0, 0, 0, 0, 1);
        if (gpt2) add_tensor(&tb, NAME("norm_1.bias"), C, 0, 0, 0, 0, 0);
        add_tensor(&tb, NAME("attn.wq.weight"), QD, C, 1, 0, std, 0);
        if (bias_qkv) add_tensor(&tb, NAME("attn.wq.bias"), QD, 0, 0, 0, 0, 0);
        add_tensor(&tb, NAME("attn.wk.weight"), KD, C, 1, 0, std, 0);
        if (bias_qkv) add_tensor(&tb, NAME("attn.wk.bias"), KD, 0, 0, 0, 0, 0);
        add_tensor(&tb, NAME("attn.wv.weight"), KD, C, 1, 0, std, 0);
        if (bias_qkv) add_tensor(&tb, NAME("attn.wv.bias"), KD, 0, 0, 0, 0, 0);
        add_tensor(&tb, NAME("attn.wo.weight"), C, QD, 1, 0, std_res, 0);
        if (gpt2) add_tensor(&tb, NAME("attn.wo.bias"), C, 0, 0, 0, 0, 0);
        add_tensor(&tb, NAME("norm_2.weight"), C, 0, 0, 0, 0, 1);
        if (gpt2) add_tensor(&tb, NAME("norm_2.bias"), C, 0, 0, 0, 0, 0);
        if (gpt2) {
            add_tensor(&tb, NAME("mlp.fc.weight"), F, C, 1, 0, std, 0);
            add_tensor(&tb, NAME("mlp.fc.bias"), F, 0, 0, 0, 0, 0);
            add_tensor(&tb, NAME("mlp.proj.weight"), C, F, 1, 0, std_res, 0);
            add_tensor(&tb, NAME("mlp.proj.bias"), C, 0, 0, 0, 0, 0);
        } else {
            add_tensor(&tb, NAME("mlp.gate.weight"), F, C, 1, 0, std, 0);
            add_tensor(&tb, NAME("mlp.up.weight"), F, C, 1, 0, std, 0);
            add_tensor(&tb, NAME("mlp.down.weight"), C, F, 1, 0, std_res, 0);
        }
#undef NAME
    }
    add_tensor(&tb, "norm_f.weight", C, 0, 0, 0, 0, 1);
    if (gpt2) add_tensor(&tb, "norm_f.bias", C, 0, 0, 0, 0, 0);
    if (!m->cfg.tie_embeddings) add_tensor(&tb, "lm_head.weight", m->Vp, C, 0, 1, std, 0);
    m->n_params = tb.offset;
}

// View of tensor `name` in buffer `base`, or NULL if the model has no such tensor.
static float *view(const model *m, float *base, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return base + m->tensors[i].offset;
    return NULL;
}

static void bind_views(model *m, model_views *v, float *base) {
    char n[MODEL_MAX_NAME];
    v->wte = view(m, base, "wte");
    v->wpe = view(m, base, "wpe");
    for (int l = 0; l < m->L; l++) {
        layer_params *lp = &v->layers[l];
#define V(s) (snprintf(n, sizeof n, "layers.%d.%s", l, s), view(m, base, n))
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
    v->normf_w = view(m, base, "norm_f.weight");
    v->normf_b = view(m, base, "norm_f.bias");
    v->lm_head = m->cfg.tie_embeddings ? v->wte : view(m, base, "lm_head.weight");
}

// ----------------------------------------------------------------------------
// allocation

// Carves consecutive 64-byte aligned pieces out of one activation allocation.
typedef struct carver {
    float *base;      // NULL during the sizing pass
    size_t used;      // floats
} carver;

static float *carve(carver *c, size_t n) {
    float *p = c->base ? c->base + c->used : NULL;
    c->used += (n + 15) / 16 * 16;
    return p;
}

static void carve_acts(model *m, carver *c) {
    const size_t B = (size_t)m->B, T = (size_t)m->T, N = B * T;
    const size_t C = (size_t)m->C, QD = (size_t)m->NH * m->HS, KD = (size_t)m->KVH * m->HS;
    const size_t F = (size_t)m->F;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    for (int l = 0; l < m->L; l++) {
        layer_acts *a = &m->acts[l];
        a->res_in = carve(c, N * C);
        a->norm1 = carve(c, N * C);
        a->n1_mean = gpt2 ? carve(c, N) : NULL;
        a->n1_rstd = carve(c, N);
        a->q = carve(c, N * QD);
        a->k = carve(c, N * KD);
        a->v = carve(c, N * KD);
        a->att_state = carve(c, m->be->attention_state_floats(m->B, m->T, m->NH));
        a->att_out = carve(c, N * QD);
        a->res_mid = carve(c, N * C);
        a->norm2 = carve(c, N * C);
        a->n2_mean = gpt2 ? carve(c, N) : NULL;
        a->n2_rstd = carve(c, N);
        a->fc = carve(c, N * F);
        a->up = gpt2 ? NULL : carve(c, N * F);
        a->act = carve(c, N * F);
    }
    m->res_out = carve(c, N * C);
    m->normf = carve(c, N * C);
    m->nf_mean = gpt2 ? carve(c, N) : NULL;
    m->nf_rstd = carve(c, N);
    m->logits = carve(c, N * (size_t)m->Vp);
    m->losses = carve(c, N);
    m->inputs = (int32_t *)carve(c, N);   // int32 and float are both 4 bytes
    m->targets = (int32_t *)carve(c, N);
    m->rope_cos = gpt2 ? NULL : carve(c, (size_t)m->maxT * (m->HS / 2));
    m->rope_sin = gpt2 ? NULL : carve(c, (size_t)m->maxT * (m->HS / 2));
    m->d_res = carve(c, N * C);
    m->d_tmp = carve(c, N * C);
    m->d_norm = carve(c, N * C);
    m->d_q = carve(c, N * QD);
    m->d_k = carve(c, N * KD);
    m->d_v = carve(c, N * KD);
    m->d_att = carve(c, N * QD);
    m->att_scratch = carve(c, m->be->attention_scratch_floats(m->B, m->T, m->NH));
    m->d_fc = carve(c, N * F);
    m->d_up = gpt2 ? NULL : carve(c, N * F);
    m->d_act = carve(c, N * F);
}

int model_init(model *m, const model_config *mc, const anv_backend *be, int B, int T,
               int n_shards) {
    memset(m, 0, sizeof *m);
    m->cfg = *mc;
    m->be = be;
    m->L = mc->n_layer;
    m->C = mc->d_model;
    m->NH = mc->n_head;
    m->KVH = mc->n_kv_head;
    m->HS = mc->d_model / mc->n_head;
    m->F = mc->ffn_dim;
    m->V = mc->vocab_size;
    m->Vp = mc->vocab_size;   // padding for tensor parallelism comes with that issue
    m->maxT = mc->max_seq_len;
    m->B = B;
    m->T = T;
    m->eps = mc->norm_eps;
    if (T > m->maxT) {
        fprintf(stderr, "anvil: train.seq_len (%d) exceeds model.max_seq_len (%d)\n", T,
                m->maxT);
        return 2;
    }

    m->tensors = calloc((size_t)m->L * MAX_TENSORS_PER_LAYER + 8, sizeof *m->tensors);
    m->p.layers = calloc((size_t)m->L, sizeof(layer_params));
    m->g.layers = calloc((size_t)m->L, sizeof(layer_params));
    m->acts = calloc((size_t)m->L, sizeof(layer_acts));
    m->losses_host = calloc((size_t)B * T, sizeof(float));
    if (!m->tensors || !m->p.layers || !m->g.layers || !m->acts || !m->losses_host) goto oom;
    build_table(m);

    size_t shards = n_shards > 1 ? (size_t)n_shards : 1;
    m->n_alloc = (m->n_params + shards - 1) / shards * shards;
    m->params = be->alloc(m->n_alloc * sizeof(float));
    m->grads = be->alloc(m->n_alloc * sizeof(float));
    if (!m->params || !m->grads) goto oom;
    bind_views(m, &m->p, m->params);
    bind_views(m, &m->g, m->grads);

    carver c = {NULL, 0};
    carve_acts(m, &c);                // sizing pass
    c.base = be->alloc(c.used * sizeof(float));
    if (!c.base) goto oom;
    c.used = 0;
    carve_acts(m, &c);                // acts[0].res_in is the start of the allocation

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

void model_free(model *m) {
    if (m->be) {
        m->be->free(m->params);
        m->be->free(m->grads);
        if (m->acts) m->be->free(m->acts[0].res_in);
    }
    free(m->tensors);
    free(m->p.layers);
    free(m->g.layers);
    free(m->acts);
    free(m->losses_host);
    memset(m, 0, sizeof *m);
}

int model_init_weights(model *m, unsigned long long seed) {
    size_t max_numel = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].numel > max_numel) max_numel = m->tensors[i].numel;
    float *host = malloc(max_numel * sizeof(float));
    if (!host) {
        fprintf(stderr, "anvil: out of memory initializing weights\n");
        return 1;
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        if (t->init_std > 0) {
            uint64_t s = rng_stream(seed, t->name);
            for (size_t j = 0; j < t->numel; j++) host[j] = (float)(t->init_std * rng_normal(&s));
        } else {
            for (size_t j = 0; j < t->numel; j++) host[j] = t->init_const;
        }
        m->be->copy_from_host(m->params + t->offset, host, t->numel * sizeof(float));
    }
    free(host);
    return 0;
}

// ----------------------------------------------------------------------------
// forward

static void norm_forward(const model *m, float *out, float *mean, float *rstd,
                         const float *inp, const float *w, const float *b, int N) {
    if (m->cfg.family == MODEL_FAMILY_GPT2)
        m->be->layernorm_forward(out, mean, rstd, inp, w, b, N, m->C, m->eps);
    else
        m->be->rmsnorm_forward(out, rstd, inp, w, N, m->C, m->eps);
}

static void norm_backward(const model *m, float *dinp, float *dw, float *db,
                          const float *dout, const float *inp, const float *w,
                          const float *mean, const float *rstd, int N) {
    if (m->cfg.family == MODEL_FAMILY_GPT2)
        m->be->layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, m->C);
    else
        m->be->rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, m->C);
}

double model_forward(model *m, const int32_t *inputs, const int32_t *targets, int B, int T) {
    const anv_backend *be = m->be;
    const int N = B * T, C = m->C, QD = m->NH * m->HS, KD = m->KVH * m->HS, F = m->F;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    m->curB = B;
    m->curT = T;
    m->have_targets = targets != NULL;

    be->copy_from_host(m->inputs, inputs, (size_t)N * sizeof(int32_t));
    be->encoder_forward(m->acts[0].res_in, m->inputs, m->p.wte, gpt2 ? m->p.wpe : NULL, B, T, C);

    for (int l = 0; l < m->L; l++) {
        const layer_params *w = &m->p.layers[l];
        layer_acts *a = &m->acts[l];
        float *res_next = l + 1 < m->L ? m->acts[l + 1].res_in : m->res_out;   // (B,T,C)

        // attention block: res_mid = res_in + wo(attention(norm_1(res_in)))
        norm_forward(m, a->norm1, a->n1_mean, a->n1_rstd, a->res_in, w->norm1_w, w->norm1_b, N);
        be->matmul_forward(a->q, a->norm1, w->wq, w->bq, N, C, QD);   // (B,T,NH,HS)
        be->matmul_forward(a->k, a->norm1, w->wk, w->bk, N, C, KD);   // (B,T,KVH,HS)
        be->matmul_forward(a->v, a->norm1, w->wv, w->bv, N, C, KD);   // (B,T,KVH,HS)
        if (!gpt2) {
            be->rope_forward(a->q, m->rope_cos, m->rope_sin, B, T, m->NH, m->HS);
            be->rope_forward(a->k, m->rope_cos, m->rope_sin, B, T, m->KVH, m->HS);
        }
        be->attention_forward(a->att_out, a->att_state, a->q, a->k, a->v, B, T, m->NH,
                              m->KVH, m->HS);
        be->matmul_forward(a->res_mid, a->att_out, w->wo, w->bo, N, QD, C);
        be->residual_forward(a->res_mid, a->res_mid, a->res_in, (size_t)N * C);

        // MLP block: res_next = res_mid + mlp(norm_2(res_mid))
        norm_forward(m, a->norm2, a->n2_mean, a->n2_rstd, a->res_mid, w->norm2_w, w->norm2_b, N);
        be->matmul_forward(a->fc, a->norm2, w->w_fc, w->b_fc, N, C, F);   // (B,T,F)
        if (gpt2) {
            be->gelu_forward(a->act, a->fc, (size_t)N * F);
        } else {
            be->matmul_forward(a->up, a->norm2, w->w_up, NULL, N, C, F);
            be->swiglu_forward(a->act, a->fc, a->up, (size_t)N * F);
        }
        be->matmul_forward(res_next, a->act, w->w_proj, w->b_proj, N, F, C);
        be->residual_forward(res_next, res_next, a->res_mid, (size_t)N * C);
    }

    norm_forward(m, m->normf, m->nf_mean, m->nf_rstd, m->res_out, m->p.normf_w, m->p.normf_b, N);
    be->matmul_forward(m->logits, m->normf, m->p.lm_head, NULL, N, C, m->Vp);   // (B,T,Vp)
    if (!targets) return 0.0;

    be->copy_from_host(m->targets, targets, (size_t)N * sizeof(int32_t));
    be->crossentropy_forward(m->losses, m->logits, m->targets, N, m->V, m->Vp);
    be->copy_to_host(m->losses_host, m->losses, (size_t)N * sizeof(float));
    double sum = 0.0;
    for (int i = 0; i < N; i++)
        if (targets[i] >= 0) sum += m->losses_host[i];
    return sum;
}

// ----------------------------------------------------------------------------
// backward: the forward pass in reverse

void model_backward(model *m, float dloss) {
    const anv_backend *be = m->be;
    const int B = m->curB, T = m->curT, N = B * T;
    const int C = m->C, QD = m->NH * m->HS, KD = m->KVH * m->HS, F = m->F;
    const int gpt2 = m->cfg.family == MODEL_FAMILY_GPT2;
    const size_t NC = (size_t)N * C;

    // logits -> dlogits in place, then into the final norm's output
    be->crossentropy_backward(m->logits, m->logits, m->targets, N, m->V, m->Vp, dloss);
    be->zero(m->d_norm, NC * sizeof(float));
    be->matmul_backward(m->d_norm, m->g.lm_head, NULL, m->logits, m->normf, m->p.lm_head, N,
                        C, m->Vp);
    // d_res: gradient of the residual stream, carried down through the layers. Each
    // residual add passes it through unchanged, so the branches' input gradients are
    // accumulated straight into it (norm backward accumulates into dinp).
    be->zero(m->d_res, NC * sizeof(float));
    norm_backward(m, m->d_res, m->g.normf_w, m->g.normf_b, m->d_norm, m->res_out,
                  m->p.normf_w, m->nf_mean, m->nf_rstd, N);

    for (int l = m->L - 1; l >= 0; l--) {
        const layer_params *w = &m->p.layers[l];
        const layer_params *g = &m->g.layers[l];
        const layer_acts *a = &m->acts[l];

        // MLP block
        be->zero(m->d_act, (size_t)N * F * sizeof(float));
        be->matmul_backward(m->d_act, g->w_proj, g->b_proj, m->d_res, a->act, w->w_proj, N, F, C);
        be->zero(m->d_fc, (size_t)N * F * sizeof(float));
        be->zero(m->d_norm, NC * sizeof(float));
        if (gpt2) {
            be->gelu_backward(m->d_fc, a->fc, m->d_act, (size_t)N * F);
        } else {
            be->zero(m->d_up, (size_t)N * F * sizeof(float));
            be->swiglu_backward(m->d_fc, m->d_up, m->d_act, a->fc, a->up, (size_t)N * F);
            be->matmul_backward(m->d_norm, g->w_up, NULL, m->d_up, a->norm2, w->w_up, N, C, F);
        }
        be->matmul_backward(m->d_norm, g->w_fc, g->b_fc, m->d_fc, a->norm2, w->w_fc, N, C, F);
        norm_backward(m, m->d_res, g->norm2_w, g->norm2_b, m->d_norm, a->res_mid, w->norm2_w,
                      a->n2_mean, a->n2_rstd, N);

        // attention block
        be->zero(m->d_att, (size_t)N * QD * sizeof(float));
        be->matmul_backward(m->d_att, g->wo, g->bo, m->d_res, a->att_out, w->wo, N, QD, C);
        be->zero(m->d_q, (size_t)N * QD * sizeof(float));
        be->zero(m->d_k, (size_t)N * KD * sizeof(float));
        be->zero(m->d_v, (size_t)N * KD * sizeof(float));
        be->attention_backward(m->d_q, m->d_k, m->d_v, m->att_scratch, m->d_att, a->att_state,
                               a->q, a->k, a->v, B, T, m->NH, m->KVH, m->HS);
        if (!gpt2) {
            be->rope_backward(m->d_q, m->rope_cos, m->rope_sin, B, T, m->NH, m->HS);
            be->rope_backward(m->d_k, m->rope_cos, m->rope_sin, B, T, m->KVH, m->HS);
        }
        be->zero(m->d_norm, NC * sizeof(float));
        be->matmul_backward(m->d_norm, g->wq, g->bq, m->d_q, a->norm1, w->wq, N, C, QD);
        be->matmul_backward(m->d_norm, g->wk, g->bk, m->d_k, a->norm1, w->wk, N, C, KD);
        be->matmul_backward(m->d_norm, g->wv, g->bv, m->d_v, a->norm1, w->wv, N, C, KD);
        norm_backward(m, m->d_res, g->norm1_w, g->norm1_b, m->d_norm, a->res_in, w->norm1_w,
                      a->n1_mean, a->n1_rstd, N);
    }
    be->encoder_backward(m->g.wte, gpt2 ? m->g.wpe : NULL, m->d_res, m->inputs, B, T, C);
}

void model_zero_grad(model *m) { m->be->zero(m->grads, m->n_alloc * sizeof(float)); }

// ----------------------------------------------------------------------------
// counts

size_t model_num_params(const model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_tensors; i++) n += m->tensors[i].numel;
    return n;
}

size_t model_num_nonembedding_params(const model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].is_embedding) n += m->tensors[i].numel;
    return n;
}

// 6 FLOPs per parameter per token (2 forward, 4 backward) for every matmul weight,
// the LM head included (tied or not); plus attention scores and values:
// 2 matmuls of T x HS per query head at 2 FLOPs per MAC, x3 for backward, halved by
// the causal mask -> 6 * L * NH * HS * T per token.
double model_flops_per_token(const model *m, int T) {
    double n = (double)model_num_nonembedding_params(m) + (double)m->Vp * m->C;
    return 6.0 * n + 6.0 * m->L * (double)m->NH * m->HS * T;
}
