// kernels/cpu/rope.c: rotary position embeddings (Llama), in place, fp32 cpu.
//
// Hugging Face "rotate_half" layout: within each head, element i (i < HS/2) and element
// i + HS/2 form a pair rotated by the angle t * inv_freq[i], whose cos/sin come from the
// tables of rope_tables_fill (kernels/rope_tables.c):
//   forward:  y1 = x1 cos - x2 sin,   y2 = x2 cos + x1 sin
// The rotation is orthogonal, so the backward is its transpose, a rotation by -angle:
//   backward: d1 = dy1 cos + dy2 sin, d2 = dy2 cos - dy1 sin
// Both overwrite their argument: rope has no parameters and its input is not needed
// again, so the gradient buffer is rotated in place (this is why rope_backward does not
// accumulate, unlike the other backward ops).
#include "kernels/cpu/cpu_ops.h"

// Rotates every head of x (B,T,H,HS) by +angle (sign = 1) or -angle (sign = -1).
static void rope_rotate(float *x, const float *cos_tab, const float *sin_tab,
                        int B, int T, int H, int HS, float sign) {
    int half = HS / 2;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *cos_t = cos_tab + (size_t)t * half;      // (HS/2)
            const float *sin_t = sin_tab + (size_t)t * half;      // (HS/2)
            for (int h = 0; h < H; h++) {
                float *x1 = x + (((size_t)b * T + t) * H + h) * HS;   // (HS/2) first half
                float *x2 = x1 + half;                                // (HS/2) second half
                for (int i = 0; i < half; i++) {
                    float c = cos_t[i], s = sign * sin_t[i];
                    float a = x1[i], d = x2[i];
                    x1[i] = a * c - d * s;
                    x2[i] = d * c + a * s;
                }
            }
        }
    }
}

void cpu_rope_forward(anv_act *x_, const float *cos_tab, const float *sin_tab,
                      int B, int T, int H, int HS) {
    float *x = x_;
    // x (B,T,H,HS) in place; cos_tab, sin_tab (maxT, HS/2)
    rope_rotate(x, cos_tab, sin_tab, B, T, H, HS, 1.0f);
}

void cpu_rope_backward(anv_act *dx_, const float *cos_tab, const float *sin_tab,
                       int B, int T, int H, int HS) {
    float *dx = dx_;
    // dx (B,T,H,HS) in place: gradient w.r.t. the rotated tensor in, unrotated out
    rope_rotate(dx, cos_tab, sin_tab, B, T, H, HS, -1.0f);
}
