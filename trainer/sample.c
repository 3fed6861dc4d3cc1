// trainer/sample.c: temperature / top-k / top-p sampling over the model's logits.
#include "trainer/sample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/rng.h"

int sampler_init(sampler *s, const model *m, float temperature, int top_k, float top_p) {
    memset(s, 0, sizeof *s);
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->probs = malloc((size_t)m->V * sizeof(float));
    s->order = malloc((size_t)m->V * sizeof(int32_t));
    s->seq = malloc((size_t)m->T * sizeof(int32_t));
    if (!s->probs || !s->order || !s->seq) {
        fprintf(stderr, "anvil: out of memory allocating the sampler\n");
        sampler_free(s);
        return 1;
    }
    return 0;
}

void sampler_free(sampler *s) {
    free(s->probs);
    free(s->order);
    free(s->seq);
    memset(s, 0, sizeof *s);
}

static const float *g_sort_probs;   // qsort has no context argument in C11
static int by_prob_desc(const void *a, const void *b) {
    float pa = g_sort_probs[*(const int32_t *)a], pb = g_sort_probs[*(const int32_t *)b];
    return (pa < pb) - (pa > pb);
}

// Draw one id from logits (V, host; may alias s->probs, which it overwrites).
static int32_t draw(sampler *s, const float *logits, int V, uint64_t *rng) {
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (s->temperature <= 0.0f) return best;
    // logits may be s->probs itself: each logit is read before its slot is written.
    const float top = logits[best];
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        s->probs[i] = expf((logits[i] - top) / s->temperature);
        sum += s->probs[i];
    }
    int n = V;
    if ((s->top_k > 0 && s->top_k < V) || s->top_p < 1.0f) {
        for (int i = 0; i < V; i++) s->order[i] = i;
        g_sort_probs = s->probs;
        qsort(s->order, (size_t)V, sizeof(int32_t), by_prob_desc);
        if (s->top_k > 0 && s->top_k < n) n = s->top_k;
        if (s->top_p < 1.0f) {
            double c = 0.0;
            for (int i = 0; i < n; i++) {
                c += s->probs[s->order[i]] / sum;
                if (c >= s->top_p) { n = i + 1; break; }
            }
        }
        sum = 0.0;
        for (int i = 0; i < n; i++) sum += s->probs[s->order[i]];
        double r = rng_uniform(rng) * sum;
        for (int i = 0; i < n; i++) {
            r -= s->probs[s->order[i]];
            if (r <= 0.0) return s->order[i];
        }
        return s->order[n - 1];
    }
    double r = rng_uniform(rng) * sum;
    for (int i = 0; i < V; i++) {
        r -= s->probs[i];
        if (r <= 0.0) return i;
    }
    return best;
}

void sampler_generate(sampler *s, model *m, const int32_t *prompt, int n_prompt, int n_new,
                      uint64_t *rng, void (*emit)(int32_t id, void *ctx), void *ctx) {
    int len = n_prompt < m->T ? n_prompt : m->T;
    memcpy(s->seq, prompt + (n_prompt - len), (size_t)len * sizeof(int32_t));
    for (int i = 0; i < n_new; i++) {
        model_forward(m, s->seq, NULL, 1, len);
        m->be->act_to_host_f32(s->probs,
                               (const char *)m->logits +
                                   (size_t)(len - 1) * m->Vp * m->be->act_bytes,
                               (size_t)m->V);
        int32_t id = draw(s, s->probs, m->V, rng);
        emit(id, ctx);
        if (len == m->T) {
            memmove(s->seq, s->seq + 1, (size_t)(len - 1) * sizeof(int32_t));
            len--;
        }
        s->seq[len++] = id;
    }
}
